package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/internal/testcert"
)

// trusting returns a client of the gateway's control listener over TLS
// that trusts the CA certificate in caFile.
func trusting(t *testing.T, e *env, caFile string) *control.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	return &control.Client{BaseURL: "https://" + e.gw.ControlAddr().String(), HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// TestGatewayControlTLS: with [control] tls_cert and tls_key the control
// API speaks only HTTPS (issue 12, point 4); a client that trusts the CA
// is served, plain HTTP is not. A reload reads the pair again (a renewed
// certificate needs no restart); a pair that does not load refuses the
// reload, naming control.tls_cert, and the one in force stays.
func TestGatewayControlTLS(t *testing.T) {
	dir := t.TempDir()
	first := testcert.Write(t, dir, "first", "127.0.0.1")
	e := newEnv(t, fmt.Sprintf("[control]\ntls_cert = %q\ntls_key = %q\n", first.Cert, first.Key))
	ctx := context.Background()

	if _, err := trusting(t, e, first.CA).Status(ctx); err != nil {
		t.Fatalf("GET /v1/status over TLS, trusting the CA: %v", err)
	}
	plain := &control.Client{BaseURL: "http://" + e.gw.ControlAddr().String(), HTTP: &http.Client{Timeout: 10 * time.Second}}
	if _, err := plain.Status(ctx); err == nil {
		t.Errorf("GET /v1/status over plain HTTP: served, want a failure")
	}

	// Renewed: a certificate of another CA, in the same files.
	second := testcert.Write(t, dir, "second", "127.0.0.1")
	for _, mv := range [][2]string{{second.Cert, first.Cert}, {second.Key, first.Key}} {
		data, err := os.ReadFile(mv[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mv[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	changed, err := e.gw.Reread("test")
	if err != nil {
		t.Fatalf("Reread after the certificate changed: %v", err)
	}
	if !slices.Contains(changed, "control.tls_cert") {
		t.Errorf("Reread changed %v, want control.tls_cert among them", changed)
	}
	if _, err := trusting(t, e, second.CA).Status(ctx); err != nil {
		t.Errorf("GET /v1/status trusting the new CA after the reload: %v", err)
	}
	if _, err := trusting(t, e, first.CA).Status(ctx); err == nil {
		t.Errorf("GET /v1/status trusting only the old CA after the reload: served, want a certificate error")
	}

	// A key that does not load: refused, the certificate in force stays.
	if err := os.WriteFile(first.Key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = e.gw.Reread("test")
	var re *gateway.ReloadError
	if !errors.As(err, &re) || re.Key != "control.tls_cert" {
		t.Errorf("Reread with a broken key file = %v, want a ReloadError naming control.tls_cert", err)
	}
	if _, err := trusting(t, e, second.CA).Status(ctx); err != nil {
		t.Errorf("GET /v1/status after a refused reload: %v, want the certificate in force", err)
	}
}
