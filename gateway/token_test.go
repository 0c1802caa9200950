package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
)

// TestGatewayTokenRotation: the token file is read again on every reload,
// so that rotating the token needs no restart (issue 12, point 4). A token
// file that cannot be read, or is empty, refuses the reload naming
// control.token_file, and the token in force stays.
func TestGatewayTokenRotation(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string) {
		t.Helper()
		if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken("first-token\n")
	e := newEnv(t, fmt.Sprintf("[control]\ntoken_file = %q\n", tokenFile))
	ctx := context.Background()
	status := func(tok string) int {
		t.Helper()
		c := *e.api
		c.Token = tok
		_, err := c.Status(ctx)
		var ae *control.APIError
		switch {
		case err == nil:
			return http.StatusOK
		case errors.As(err, &ae):
			return ae.Code
		}
		t.Fatalf("GET /v1/status: %v", err)
		return 0
	}
	if got := status("first-token"); got != http.StatusOK {
		t.Fatalf("the first token: %d, want 200", got)
	}

	writeToken("second-token\n")
	changed, err := e.gw.Reread("test")
	if err != nil {
		t.Fatalf("Reread after the token file changed: %v", err)
	}
	if !slices.Contains(changed, "control.token_file") {
		t.Errorf("Reread changed %v, want control.token_file among them", changed)
	}
	if got := status("first-token"); got != http.StatusUnauthorized {
		t.Errorf("the first token after the rotation: %d, want 401", got)
	}
	if got := status("second-token"); got != http.StatusOK {
		t.Errorf("the second token after the rotation: %d, want 200", got)
	}

	for _, tc := range []struct {
		name  string
		write func()
	}{
		{"empty", func() { writeToken("  \n") }},
		{"removed", func() { os.Remove(tokenFile) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.write()
			_, err := e.gw.Reread("test")
			var re *gateway.ReloadError
			if !errors.As(err, &re) || re.Key != "control.token_file" {
				t.Errorf("Reread with the token file %s = %v, want a ReloadError naming control.token_file", tc.name, err)
			}
			if got := status("second-token"); got != http.StatusOK {
				t.Errorf("the token in force after a refused reload: %d, want 200", got)
			}
		})
	}
}
