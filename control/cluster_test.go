package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeCluster is a Cluster with canned answers that counts rebalances.
type fakeCluster struct {
	nodes      []ClusterNode
	err        error
	rebalances int
}

func (f *fakeCluster) Holder(ip netip.Addr) (string, bool) {
	if ip == netip.MustParseAddr("198.18.0.100") {
		return "gw-a", true
	}
	return "", false
}

func (f *fakeCluster) Nodes(context.Context) ([]ClusterNode, error) { return f.nodes, f.err }
func (f *fakeCluster) Rebalance(context.Context) error {
	if f.err != nil {
		return f.err
	}
	f.rebalances++
	return nil
}

func TestHandlerCluster(t *testing.T) {
	nodes := []ClusterNode{{Node: "gw-a", MAC: "02:00:00:00:00:0a", Control: "198.19.0.1:7070", LeaseLeft: "3s", Held: 2}}
	tests := []struct {
		name           string
		cluster        *fakeCluster // nil: no cluster
		method, path   string
		body           string
		wantCode       int
		wantNodes      []ClusterNode
		wantRebalances int
	}{
		{name: "status", cluster: &fakeCluster{nodes: nodes}, method: http.MethodGet, path: PathClusterStatus, wantCode: 200, wantNodes: nodes},
		{name: "status, no node", cluster: &fakeCluster{}, method: http.MethodGet, path: PathClusterStatus, wantCode: 200, wantNodes: []ClusterNode{}},
		{name: "status, etcd down", cluster: &fakeCluster{err: errors.New("etcd down")}, method: http.MethodGet, path: PathClusterStatus, wantCode: 503},
		{name: "rebalance", cluster: &fakeCluster{}, method: http.MethodPost, path: PathClusterRebalance, body: "{}", wantCode: 200, wantRebalances: 1},
		{name: "rebalance, empty body", cluster: &fakeCluster{}, method: http.MethodPost, path: PathClusterRebalance, wantCode: 200, wantRebalances: 1},
		{name: "rebalance, unknown field", cluster: &fakeCluster{}, method: http.MethodPost, path: PathClusterRebalance, body: `{"all":true}`, wantCode: 400},
		{name: "rebalance, etcd down", cluster: &fakeCluster{err: errors.New("etcd down")}, method: http.MethodPost, path: PathClusterRebalance, body: "{}", wantCode: 503},
		{name: "rebalance with GET", cluster: &fakeCluster{}, method: http.MethodGet, path: PathClusterRebalance, wantCode: 405},
		{name: "no cluster: status", method: http.MethodGet, path: PathClusterStatus, wantCode: 404},
		{name: "no cluster: rebalance", method: http.MethodPost, path: PathClusterRebalance, body: "{}", wantCode: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, func(o *Options) {
				if tc.cluster != nil {
					o.Cluster = tc.cluster
				}
			})
			rec := do(h, tc.method, tc.path, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantNodes != nil {
				var st ClusterStatus
				if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
					t.Fatalf("decode %s: %v", rec.Body, err)
				}
				if diff := cmp.Diff(tc.wantNodes, st.Nodes); diff != "" {
					t.Errorf("nodes (-want +got):\n%s", diff)
				}
			}
			if tc.cluster != nil && tc.cluster.rebalances != tc.wantRebalances {
				t.Errorf("rebalances = %d, want %d", tc.cluster.rebalances, tc.wantRebalances)
			}
		})
	}
}

// TestStatusHolder checks the holder of each binding in GET /v1/status:
// the holding gateway, "none", or absent for a gateway alone.
func TestStatusHolder(t *testing.T) {
	tests := []struct {
		name    string
		cluster Cluster
		want    map[string]string // ip -> holder
	}{
		{"alone", nil, map[string]string{"198.18.0.100": "", "198.18.0.10": ""}},
		{"cluster", &fakeCluster{}, map[string]string{"198.18.0.100": "gw-a", "198.18.0.10": "none"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, func(o *Options) { o.Cluster = tc.cluster })
			rec := do(h, http.MethodGet, PathStatus, "", "")
			var st Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatalf("decode %s: %v", rec.Body, err)
			}
			got := map[string]string{}
			for _, b := range st.Bindings {
				got[b.IP] = b.Holder
			}
			for ip, want := range tc.want {
				if g, ok := got[ip]; !ok || g != want {
					t.Errorf("holder of %s = %q (present %v), want %q; status %s", ip, g, ok, want, rec.Body)
				}
			}
		})
	}
}
