package gateway

import (
	"context"
	"net/netip"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
)

// clusterOptions are the holder options of [cluster] (docs/cluster.md);
// gateway.New fills in the rest.
func clusterOptions(c config.Cluster) (*cluster.Options, error) {
	tlsCfg, err := etcdTLS(c)
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
