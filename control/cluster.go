package control

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
)

// Cluster API paths; they exist when the gateway is one of a cluster
// (Options.Cluster), and are 404 otherwise.
const (
	// PathClusterStatus answers GET with ClusterStatus: the live
	// gateways.
	PathClusterStatus = "/v1/cluster/status"
	// PathClusterRebalance answers POST (empty body or {}) by asking every
	// gateway to give up the addresses that another live gateway is
	// preferred for, so that it takes them (their connections are reset).
	PathClusterRebalance = "/v1/cluster/rebalance"
)

// Cluster is what the control API needs of the gateway's cluster
// membership (package cluster, through the gateway).
type Cluster interface {
	// Nodes reads the live gateways from etcd.
	Nodes(ctx context.Context) ([]ClusterNode, error)
	// Rebalance asks every gateway to move addresses to their preferred
	// holders.
	Rebalance(ctx context.Context) error
	// Holder returns the gateway holding ip, as this gateway last saw
	// etcd, and whether one does. It must not block.
	Holder(ip netip.Addr) (string, bool)
}

// ClusterNode is one live gateway in ClusterStatus.
type ClusterNode struct {
	// Node is the gateway's name ([cluster] node).
	Node string `json:"node"`
	// MAC is its front NIC's MAC address.
	MAC string `json:"mac"`
	// Control is its control API address.
	Control string `json:"control"`
	// Priority is its [cluster] priority.
	Priority int `json:"priority"`
	// LeaseLeft is the time left on its etcd lease, a Go duration.
	LeaseLeft string `json:"lease_left"`
	// Held is how many addresses it holds.
	Held int `json:"held"`
}

// ClusterStatus is the answer of GET /v1/cluster/status.
type ClusterStatus struct {
	Nodes []ClusterNode `json:"nodes"`
}

// clusterStatus serves GET /v1/cluster/status.
func (s *server) clusterStatus(w http.ResponseWriter, r *http.Request) error {
	nodes, err := s.cluster.Nodes(r.Context())
	if err != nil {
		return &httpError{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("cluster status: %v", err)}
	}
	if nodes == nil {
		nodes = []ClusterNode{}
	}
	writeJSON(w, http.StatusOK, ClusterStatus{Nodes: nodes})
	return nil
}

// clusterRebalance serves POST /v1/cluster/rebalance.
func (s *server) clusterRebalance(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	if r.ContentLength != 0 {
		if err := decode(w, r, &req); err != nil {
			return err
		}
	}
	if err := s.cluster.Rebalance(r.Context()); err != nil {
		return &httpError{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("rebalance: %v", err)}
	}
	s.log.Info("cluster rebalance requested")
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// ClusterStatus returns the live gateways (GET /v1/cluster/status).
func (c *Client) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := c.do(ctx, http.MethodGet, PathClusterStatus, nil, &st)
	return st, err
}

// ClusterRebalance asks the cluster to rebalance (POST
// /v1/cluster/rebalance).
func (c *Client) ClusterRebalance(ctx context.Context) error {
	var res struct{}
	return c.do(ctx, http.MethodPost, PathClusterRebalance, struct{}{}, &res)
}

// holderOf is the Holder of a BindingView of ip: the holding gateway's
// name, "none", or "" for a gateway alone.
func (s *server) holderOf(ip string) string {
	if s.cluster == nil {
		return ""
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	if n, ok := s.cluster.Holder(a); ok {
		return n
	}
	return "none"
}
