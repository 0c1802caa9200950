package control

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestHealthzUnhealthy (issue 12 point 11): /healthz answers what
// Options.Health says: 200 while it returns nil, 503 with its error's text
// otherwise, without the token like always.
func TestHealthzUnhealthy(t *testing.T) {
	tests := []struct {
		name     string
		health   error
		wantCode int
		wantBody string
	}{
		{name: "healthy", wantCode: http.StatusOK, wantBody: `{"ok":true}`},
		{name: "front link gone", health: errors.New("front interface f0 (index 2) is gone"), wantCode: http.StatusServiceUnavailable, wantBody: `{"error":"front interface f0 (index 2) is gone"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, func(o *Options) {
				o.Token = "secret"
				o.Health = func() error { return tc.health }
			})
			rec := do(h, http.MethodGet, PathHealth, "", "")
			if got := strings.TrimSpace(rec.Body.String()); rec.Code != tc.wantCode || got != tc.wantBody {
				t.Errorf("GET %s = %d %s, want %d %s", PathHealth, rec.Code, got, tc.wantCode, tc.wantBody)
			}
		})
	}
}
