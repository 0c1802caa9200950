package gateway_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
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

// TestGatewayFrontLinkFailed (issue 12 point 11, issue 15 point 0): when
// the front link fails (its interface deleted, its receive loop dead),
// /healthz answers 503 with the link's error and Run returns that error,
// so that serve exits non-zero instead of living on without its link.
func TestGatewayFrontLinkFailed(t *testing.T) {
	e := newEnv(t, "")
	linkErr := errors.New("front interface test0 (index 7) is gone")
	e.link.Fail(linkErr)
	select {
	case err := <-e.runErr:
		if !errors.Is(err, linkErr) {
			t.Errorf("Run() after the front link failed = %v, want %v", err, linkErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run() still running 10 s after the front link failed, want it to return the link's error")
	}
	e.runErr <- nil // for cleanup
	if code, msg := getHealthz(t, e); code != http.StatusServiceUnavailable || !strings.Contains(msg, "test0") {
		t.Errorf("/healthz after the front link failed = %d %q, want 503 naming test0", code, msg)
	}
}
