package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
)

// clusterOptions are the holder options of [cluster] (docs/cluster.md);
// gateway.New fills in the rest.
func clusterOptions(c config.Cluster) (*cluster.Options, error) {
	tlsCfg, err := holdersTLS(c)
	if err != nil {
		return nil, err
	}
	return &cluster.Options{
		Endpoints:  c.Etcd,
		TLS:        tlsCfg,
		Node:       c.Node,
		Lease:      c.Lease.Duration,
		Placement:  c.Placement,
		Priority:   c.Priority,
		OnEtcdLoss: c.OnEtcdLoss,
	}, nil
}

// holdersTLS is the TLS configuration that [cluster] etcd_ca, etcd_cert
// and etcd_key describe; nil for none.
func holdersTLS(c config.Cluster) (*tls.Config, error) {
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
			return nil, fmt.Errorf("cluster.etcd_cert, cluster.etcd_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// clusterAPI serves the control API's cluster endpoints from the
// gateway's cluster membership.
type clusterAPI struct{ cl *cluster.Cluster }

var _ control.Cluster = clusterAPI{}

// Nodes implements control.Cluster.
func (a clusterAPI) Nodes(ctx context.Context) ([]control.ClusterNode, error) {
	st, err := a.cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]control.ClusterNode, 0, len(st))
	for _, n := range st {
		out = append(out, control.ClusterNode{
			Node: n.Name, MAC: n.MAC, Control: n.Control, Priority: n.Priority,
			LeaseLeft: n.LeaseLeft.String(), Held: n.Held,
		})
	}
	return out, nil
}

// Holder implements control.Cluster.
func (a clusterAPI) Holder(ip netip.Addr) (string, bool) { return a.cl.Holder(ip) }

// Rebalance implements control.Cluster.
func (a clusterAPI) Rebalance(ctx context.Context) error { return a.cl.Rebalance(ctx) }
