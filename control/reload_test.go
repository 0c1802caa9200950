package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/registry"
)

func TestHandlerReload(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		body       string
		result     []string
		err        error
		wantCode   int
		wantField  string
		wantResult ReloadResult
	}{
		{name: "changes", method: "POST", result: []string{"health.interval", "log.level"}, wantCode: 200, wantResult: ReloadResult{Changed: []string{"health.interval", "log.level"}}},
		{name: "nothing changed", method: "POST", body: "{}", wantCode: 200, wantResult: ReloadResult{Changed: []string{}}},
		{name: "bad file", method: "POST", err: registry.Invalid("health.rise", "0 is out of range"), wantCode: 400, wantField: "health.rise"},
		{name: "fixed key", method: "POST", err: &registry.FieldError{Field: "nic.interface", Kind: registry.ErrConflict, Msg: "cannot change"}, wantCode: 409, wantField: "nic.interface"},
		{name: "internal", method: "POST", err: errors.New("read config: permission denied"), wantCode: 500},
		{name: "unknown field", method: "POST", body: `{"force":true}`, wantCode: 400, wantField: "force"},
		{name: "GET", method: "GET", wantCode: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			h, _ := testHandler(t, func(o *Options) {
				o.Reload = func(context.Context) ([]string, error) {
					calls++
					return tc.result, tc.err
				}
			})
			rec := do(h, tc.method, PathReload, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, PathReload, rec.Code, rec.Body, tc.wantCode)
			}
			if rec.Code != 200 {
				checkErrorBody(t, rec, tc.wantField)
				return
			}
			if calls != 1 {
				t.Errorf("Reload called %d times, want 1", calls)
			}
			var got ReloadResult
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("answer %q: %v", rec.Body, err)
			}
			if diff := cmp.Diff(tc.wantResult, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandlerReloadAbsent: without Options.Reload there is no such path.
func TestHandlerReloadAbsent(t *testing.T) {
	h, _ := testHandler(t, nil)
	if rec := do(h, "POST", PathReload, "", ""); rec.Code != http.StatusNotFound {
		t.Errorf("POST %s without Options.Reload = %d, want 404", PathReload, rec.Code)
	}
}

// TestHandlerSharedFunc: a request without ip follows the address that
// SharedFunc returns at the time.
func TestHandlerSharedFunc(t *testing.T) {
	shared := testShared
	h, reg := testHandler(t, func(o *Options) {
		o.Shared = netip.Addr{}
		o.SharedFunc = func() netip.Addr { return shared }
	})
	shared = netip.MustParseAddr("198.18.0.101")
	rec := do(h, "POST", PathRegister, `{"name":"web-c","port":8080,"backend":"198.19.0.4:8080"}`, "")
	if rec.Code != 200 {
		t.Fatalf("register on the shared address = %d %s, want 200", rec.Code, rec.Body)
	}
	if _, ok := reg.Table().Binding(registry.Key{IP: shared, Port: 8080}); !ok {
		t.Errorf("no binding %s:8080 after registering with SharedFunc returning it", shared)
	}
	var st Status
	if err := json.Unmarshal(do(h, "GET", PathStatus, "", "").Body.Bytes(), &st); err != nil || st.Shared != shared.String() {
		t.Errorf("status shared = %q (%v), want %s", st.Shared, err, shared)
	}
}

// TestClientReload: the client's Reload against a real handler.
func TestClientReload(t *testing.T) {
	h, _ := testHandler(t, func(o *Options) {
		o.Token = "s3cret"
		o.Reload = func(context.Context) ([]string, error) {
			return nil, registry.Invalid("log.level", `"loud" is not one of "debug", "info", "warn", "error"`)
		}
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, Token: "s3cret"}
	_, err := c.Reload(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Field != "log.level" {
		t.Fatalf("Reload() = %v, want a 400 APIError naming log.level", err)
	}
}
