package config

import (
	"strings"
	"testing"
)

func TestParseCluster(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		wantEnabled bool
		// wantErrs must each appear in the error message; none means
		// Parse succeeds.
		wantErrs  []string
		wantLines int
	}{
		{name: "no section: alone", in: ``},
		{name: "etcd and node", in: `etcd = ["http://198.19.0.254:2379"]
node = "gw-a"`, wantEnabled: true},
		{
			name:      "node without etcd",
			in:        `node = "gw-a"`,
			wantErrs:  []string{"cluster.etcd: required when [cluster] is used (cluster.node is set)"},
			wantLines: 1,
		},
		{
			name:      "etcd without node",
			in:        `etcd = ["http://198.19.0.254:2379"]`,
			wantErrs:  []string{"cluster.node: required with cluster.etcd"},
			wantLines: 1,
		},
		{
			name: "bad endpoints",
			in: `etcd = ["198.19.0.254:2379", "ftp://a:1", "http://a", "http://a:99999", "http://a:1/x", "http://b:2", "http://b:2", 3]
node = "gw-a"`,
			wantErrs: []string{
				`cluster.etcd[0]: "198.19.0.254:2379" is not an etcd endpoint`,
				`cluster.etcd[1]: "ftp://a:1" is not an etcd endpoint`,
				`cluster.etcd[2]: "http://a" has no port`,
				`cluster.etcd[3]: "http://a:99999": port "99999" is not 1..65535`,
				`cluster.etcd[4]: "http://a:1/x": an endpoint is scheme://host:port only`,
				`cluster.etcd[6]: "http://b:2" is listed twice`,
				`cluster.etcd[7]: line 8: want a string`,
			},
			wantLines: 7,
		},
		{
			name: "out of range and unknown choices",
			in: `etcd = ["http://198.19.0.254:2379"]
node = "gw a"
lease = "500ms"
placement = "nearest"
priority = 70000
on_etcd_loss = "maybe"`,
			wantErrs: []string{
				`cluster.node: "gw a": use letters, digits`,
				"cluster.lease: 500ms is out of range: use 1s..1m0s",
				`cluster.placement: "nearest" is not one of "spread", "priority"`,
				"cluster.priority: 70000 is out of range: use 0..65535",
				`cluster.on_etcd_loss: "maybe" is not one of "silent", "keep"`,
			},
			wantLines: 5,
		},
		{
			name: "lease too long",
			in: `etcd = ["http://198.19.0.254:2379"]
node = "gw-a"
lease = "61s"`,
			wantErrs:  []string{"cluster.lease: 1m1s is out of range: use 1s..1m0s"},
			wantLines: 1,
		},
		{
			name: "client certificate without its key",
			in: `etcd = ["https://198.19.0.254:2379"]
node = "gw-a"
etcd_cert = "/etc/c.pem"
etcd_ca = " "`,
			wantErrs:  []string{"cluster.etcd_cert: needs cluster.etcd_key too", "cluster.etcd_ca: is only whitespace"},
			wantLines: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := minimal
			if tc.in != "" {
				in += "\n[cluster]\n" + tc.in + "\n"
			}
			c, err := Parse([]byte(in))
			if len(tc.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("Parse() error: %v, want none", err)
				}
				if got := c.Cluster.Enabled(); got != tc.wantEnabled {
					t.Errorf("Cluster.Enabled() = %v, want %v", got, tc.wantEnabled)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse() succeeded, want errors %q", tc.wantErrs)
			}
			msg := err.Error()
			for _, want := range tc.wantErrs {
				if !strings.Contains(msg, want) {
					t.Errorf("Parse() error %q does not contain %q", msg, want)
				}
			}
			if got := len(strings.Split(msg, "\n")); got != tc.wantLines {
				t.Errorf("Parse() error has %d lines, want %d:\n%s", got, tc.wantLines, msg)
			}
		})
	}
}
