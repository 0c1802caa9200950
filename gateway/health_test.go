package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// getHealthz GETs /healthz from e's control API: status code and the
// "error" of the body (empty when ok).
func getHealthz(t *testing.T, e *env) (int, string) {
	t.Helper()
	resp, err := http.Get(e.api.BaseURL + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &v)
	return resp.StatusCode, v.Error
}

// TestGatewayHealthzClosed (issue 12 point 11): /healthz answers 200 while
// the gateway runs and 503 once it is closed (its stack stopped), instead
// of always ok.
func TestGatewayHealthzClosed(t *testing.T) {
	e := newEnv(t, "")
	if code, msg := getHealthz(t, e); code != http.StatusOK {
		t.Fatalf("/healthz of a running gateway = %d %q, want 200", code, msg)
	}
	if err := e.gw.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	code, msg := getHealthz(t, e)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "closed") {
		t.Errorf("/healthz of a closed gateway = %d %q, want 503 saying it is closed", code, msg)
	}
}
