package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/internal/testcert"
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

// TestCheckTLS: vipmux check loads [control] tls_cert and tls_key as
// serve does: a pair that loads passes, a key that does not fails naming
// control.tls_cert.
func TestCheckTLS(t *testing.T) {
	f := newCheckFixture(t)
	certs := testcert.Write(t, f.dir, "api", "127.0.0.1")
	tlsKeys := fmt.Sprintf("[control]\ntls_cert = %q\ntls_key = %q\n", certs.Cert, certs.Key)
	p := f.config(t, "", "[control]\n", tlsKeys)
	if out, err := runApp("check", "--config", p); err != nil || !strings.Contains(out, "the API speaks HTTPS") {
		t.Errorf("vipmux check with a good pair: %v\n%s", err, out)
	}
	bad := fmt.Sprintf("[control]\ntls_cert = %q\ntls_key = %q\n", certs.Cert, certs.CA)
	p = f.config(t, "", "[control]\n", bad)
	if out, err := runApp("check", "--config", p); err == nil || !strings.Contains(out, "control.tls_cert") {
		t.Errorf("vipmux check with a CA certificate for a key: %v, want an error naming control.tls_cert\n%s", err, out)
	}
}
