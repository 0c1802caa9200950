package control

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeRequests feeds arbitrary bodies to the POST endpoints. The
// handler must never panic, and every answer must be valid JSON with a 2xx
// or 4xx code.
func FuzzDecodeRequests(f *testing.F) {
	for _, seed := range []string{
		`{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`,
		`{"name":"web-c","port":80,"backend":"198.19.0.4:80","state":"standby"}`,
		`{"name":"web-a","ip":"198.18.0.10"}`,
		`{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","ttl":"2s"}`,
		`{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","ttl":"-9223372036854775808ns"}`,
		`{"ip":"198.18.0.100","port":80,"to":"web-b"}`,
		`{"port":80,"to":"web-b"}`,
		`{"name":"x","port":-1,"backend":"[2001:db8::1]:80"}`,
		`{"name":"x","port":1e3}`,
		`{"name":"\u0000"}`,
		`{}{}`,
		`{"name":`,
		`null`,
		`[]`,
		``,
		`{"colour":"red"}`,
		`{"registrations":[{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4"},{"name":"s2","port":80,"backend":"198.19.0.4:80"}]}`,
		`{"registrations":[{"name":"s1","ip":"198.18.0.10","backend":"198.19.0.4"}]}`,
		`{"registrations":[null,1,"x",[],{}]}`,
		`{"registrations":null}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		reg := testRegistry(t)
		h, err := NewHandler(Options{Registry: reg, Shared: testShared, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{PathRegister, PathRegisterBatch, PathDeregister, PathSwitch, PathRenew} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if c := rec.Code; !(c >= 200 && c < 300) && !(c >= 400 && c < 500) {
				t.Errorf("POST %s %q: code %d, want 2xx or 4xx; body %s", path, body, c, rec.Body.String())
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Errorf("POST %s %q: answer %q is not JSON", path, body, rec.Body.String())
			}
		}
	})
}
