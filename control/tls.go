package control

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS returns the TLS settings of a client that trusts the CA
// certificates in caFile (PEM) instead of the system's roots: for a
// gateway whose [control] tls_cert a private CA signed. Both the CLI
// (--ca-file, $VIPMUX_CA_FILE) and tests use it.
func ClientTLS(caFile string) (*tls.Config, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
