package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestCheckExposedAPI: vipmux check fails, as serve does, a control API
// listening beyond loopback without a token, naming control.listen and the
// keys that fix it; insecure = true passes (issue 12, point 4).
func TestCheckExposedAPI(t *testing.T) {
	for _, tc := range []struct {
		name     string
		insecure bool
		wantErr  bool
	}{
		{name: "no token", wantErr: true},
		{name: "no token, insecure on purpose", insecure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCheckFixture(t)
			ctl := "[control]\n"
			if tc.insecure {
				ctl += "insecure = true\n"
			}
			// Every interface: check binds it, then lets go.
			p := f.config(t, "", fmt.Sprintf("token_file = %q\n", f.token), "", "listen = \"127.0.0.1:", "listen = \"0.0.0.0:", "[control]\n", ctl)
			out, err := runApp("check", "--config", p)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("vipmux check: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("vipmux check: nil error, want one for control.listen\n%s", out)
			}
			for _, want := range []string{"control.listen", "not a loopback address", "token_file", "insecure = true"} {
				if !strings.Contains(out, want) {
					t.Errorf("vipmux check output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
