package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/etcdstore"
)

// openTable opens the shared table of [cluster]: it connects to etcd and
// lists the table, retrying (and logging) while etcd cannot be reached,
// until ctx is done.
func openTable(ctx context.Context, c config.Cluster, log *slog.Logger) (*etcdstore.Store, error) {
	tlsCfg, err := etcdTLS(c)
	if err != nil {
		return nil, err
	}
	st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Etcd, TLS: tlsCfg, Logger: log.With("node", c.Node)})
	if err != nil {
		return nil, fmt.Errorf("cluster.etcd: %w", err)
	}
	return st, nil
}

// etcdTLS is the TLS configuration that [cluster] etcd_ca, etcd_cert and
// etcd_key describe; nil for none.
func etcdTLS(c config.Cluster) (*tls.Config, error) {
	if c.EtcdCA == "" && c.EtcdCert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.EtcdCA != "" {
		pem, err := os.ReadFile(c.EtcdCA)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd_ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.etcd_ca: %s holds no PEM certificate", c.EtcdCA)
		}
	}
	if c.EtcdCert != "" {
		cert, err := tls.LoadX509KeyPair(c.EtcdCert, c.EtcdKey)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd_cert, cluster.etcd_key: %w", errors.Unwrap(err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
