package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/internal/testcert"
)

// TestClientCAFile: the client commands trust the CA certificate of
// --ca-file or $VIPMUX_CA_FILE for an https gateway (issue 12, point 4),
// and refuse a certificate they cannot verify.
func TestClientCAFile(t *testing.T) {
	certs := testcert.Write(t, t.TempDir(), "api", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"bindings":[]}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()

	for _, tc := range []struct {
		name    string
		env     string
		args    []string
		wantErr string
	}{
		{name: "--ca-file", args: []string{"--ca-file", certs.CA}},
		{name: "$VIPMUX_CA_FILE", env: certs.CA},
		{name: "no CA: the system's roots", wantErr: "certificate"},
		{name: "a CA file that is not one", args: []string{"--ca-file", certs.Key}, wantErr: "--ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VIPMUX_CA_FILE", tc.env)
			out, err := runApp(append([]string{"status", "--gateway", srv.URL}, tc.args...)...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("vipmux status: %v\n%s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error()+out, tc.wantErr) {
				t.Errorf("vipmux status: %v\n%s\nwant an error with %q", err, out, tc.wantErr)
			}
		})
	}
}
