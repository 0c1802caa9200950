package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

// stubCluster answers the cluster endpoints for the CLI tests.
type stubCluster struct {
	err        error
	rebalanced bool
}

func (s *stubCluster) Nodes(context.Context) ([]control.ClusterNode, error) {
	if s.err != nil {
		return nil, s.err
	}
	return []control.ClusterNode{
		{Node: "gw-a", MAC: "02:00:00:00:00:0a", Control: "198.19.0.1:7070", Priority: 100, LeaseLeft: "3s", Held: 25},
		{Node: "gw-b", MAC: "02:00:00:00:00:0b", Control: "198.19.0.2:7070", Priority: 50, LeaseLeft: "2s", Held: 25},
	}, nil
}

func (s *stubCluster) Holder(netip.Addr) (string, bool) { return "gw-a", true }

func (s *stubCluster) Rebalance(context.Context) error {
	if s.err != nil {
		return s.err
	}
	s.rebalanced = true
	return nil
}

func clusterGateway(t *testing.T, cl control.Cluster) string {
	t.Helper()
	reg, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	h, err := control.NewHandler(control.Options{Registry: reg, Cluster: cl, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestClusterCommands(t *testing.T) {
	tests := []struct {
		name           string
		cluster        control.Cluster // nil: a gateway without [cluster]
		args           []string
		wantErr        string // "" means success
		wantOut        []string
		wantRebalanced bool
	}{
		{name: "status", cluster: &stubCluster{}, args: []string{"cluster", "status"},
			wantOut: []string{"NODE", "HELD", "gw-a", "02:00:00:00:00:0a", "198.19.0.1:7070", "gw-b"}},
		{name: "status json", cluster: &stubCluster{}, args: []string{"cluster", "status", "--json"},
			wantOut: []string{`"node": "gw-a"`, `"held": 25`}},
		{name: "status, etcd down", cluster: &stubCluster{err: errors.New("etcd unreachable")}, args: []string{"cluster", "status"},
			wantErr: "etcd unreachable"},
		{name: "rebalance", cluster: &stubCluster{}, args: []string{"cluster", "rebalance"},
			wantOut: []string{"rebalance requested"}, wantRebalanced: true},
		{name: "no cluster", args: []string{"cluster", "status"}, wantErr: "404"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := clusterGateway(t, tc.cluster)
			args := append(append([]string(nil), tc.args...), "--gateway", url)
			out, err := runApp(args...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("vipmux %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("vipmux %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.wantErr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("vipmux %s output lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
			if s, ok := tc.cluster.(*stubCluster); ok && s.rebalanced != tc.wantRebalanced {
				t.Errorf("rebalanced = %v, want %v", s.rebalanced, tc.wantRebalanced)
			}
		})
	}
}

// TestStatusHolderColumn checks that `vipmux status` on a gateway of a
// cluster shows who holds each IP, and that a gateway alone shows no
// HOLDER column.
func TestStatusHolderColumn(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cluster    control.Cluster
		wantHolder bool
	}{
		{"cluster", &stubCluster{}, true},
		{"alone", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := registry.New(registry.Options{})
			if err != nil {
				t.Fatalf("registry.New: %v", err)
			}
			if _, err := reg.Register(registry.Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("198.19.0.2:0")}); err != nil {
				t.Fatalf("Register: %v", err)
			}
			h, err := control.NewHandler(control.Options{Registry: reg, Cluster: tc.cluster, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("NewHandler: %v", err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			out, err := runApp("status", "--gateway", srv.URL)
			if err != nil {
				t.Fatalf("vipmux status: %v\n%s", err, out)
			}
			if got := strings.Contains(out, "HOLDER") && strings.Contains(out, "gw-a"); got != tc.wantHolder {
				t.Errorf("vipmux status shows the holder = %v, want %v:\n%s", got, tc.wantHolder, out)
			}
		})
	}
}
