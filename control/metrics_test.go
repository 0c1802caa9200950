package control

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/metrics"
)

// TestHandlerMetrics checks GET /metrics: the Prometheus text format from
// package metrics, behind the token like every path but /healthz, and 404
// when the gateway serves no metrics.
func TestHandlerMetrics(t *testing.T) {
	tests := []struct {
		name        string
		noMetrics   bool
		token       string // configured
		method      string
		auth        string // presented
		wantCode    int
		wantInBody  []string
		wantErrBody bool
	}{
		{name: "no token configured", method: "GET", wantCode: 200,
			wantInBody: []string{"# TYPE vipmux_bindings gauge", "vipmux_bindings 2", `vipmux_switches_total{ip="198.18.0.100",port="80"} 0`, "go_goroutines "}},
		{name: "right token", token: testToken, auth: testToken, method: "GET", wantCode: 200, wantInBody: []string{"vipmux_bindings 2"}},
		{name: "no token", token: testToken, method: "GET", wantCode: 401, wantErrBody: true},
		{name: "wrong token", token: testToken, auth: "wrong", method: "GET", wantCode: 401, wantErrBody: true},
		{name: "POST", method: "POST", wantCode: 405, wantErrBody: true},
		{name: "no metrics", noMetrics: true, method: "GET", wantCode: 404, wantErrBody: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, func(o *Options) {
				o.Token = tc.token
				if tc.noMetrics {
					return
				}
				m, err := metrics.New(metrics.Options{Table: o.Registry, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatalf("metrics.New: %v", err)
				}
				o.Metrics = m.Handler()
			})
			rec := do(h, tc.method, PathMetrics, "", tc.auth)
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s: code %d, want %d; body %s", tc.method, PathMetrics, rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantErrBody {
				checkErrorBody(t, rec, "")
				return
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want the Prometheus text format (text/plain)", ct)
			}
			for _, want := range tc.wantInBody {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("body has no %q:\n%s", want, rec.Body.String())
				}
			}
		})
	}
}
