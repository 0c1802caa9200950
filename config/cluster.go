package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// Cluster is the [cluster] section: several gateways sharing one table
// through etcd. Without cluster.etcd the gateway runs alone on its state
// file, and the other keys of the section must be left out.
type Cluster struct {
	// Etcd is [cluster] etcd: the etcd endpoints ("http://host:port" or
	// "https://host:port"). Empty (the default) means no cluster.
	Etcd []string
	// Node is [cluster] node: this gateway's unique name, required with
	// Etcd; a name as registry.ValidateName accepts.
	Node string
	// Lease is [cluster] lease: how long a dead gateway's IPs stay dark at
	// most; default 3s, 1s..60s.
	Lease Duration
	// Placement is [cluster] placement: "spread" (default: weighted
	// rendezvous hashing over the live gateways) or "priority" (the live
	// gateway with the highest Priority holds every IP).
	Placement string
	// Priority is [cluster] priority: used by placement = "priority";
	// default 100, 0..65535.
	Priority int
	// EtcdCA, EtcdCert and EtcdKey are [cluster] etcd_ca, etcd_cert and
	// etcd_key: PEM files for TLS to etcd (the CA that signed the
	// servers' certificates; this gateway's client certificate and its
	// key, both or neither). Empty means none.
	EtcdCA, EtcdCert, EtcdKey string
	// OnEtcdLoss is [cluster] on_etcd_loss: "silent" (default: stop
	// answering for the held IPs before the lease can have ended on the
	// etcd side) or "keep" (keep answering: availability over
	// consistency, with the risk of two gateways answering for one IP).
	OnEtcdLoss string
}

// Enabled reports whether the gateway is part of a cluster.
func (c Cluster) Enabled() bool { return len(c.Etcd) > 0 }

// Cluster limits.
const (
	// MinClusterLease and MaxClusterLease bound [cluster] lease.
	MinClusterLease = time.Second
	MaxClusterLease = 60 * time.Second
	// maxPriority bounds [cluster] priority.
	maxPriority = 65535

	defaultClusterLease = 3 * time.Second
	defaultPriority     = 100
)

var (
	placements  = []string{"spread", "priority"}
	etcdLossOps = []string{"silent", "keep"}
)

// stringList is a list of strings.
var stringList = kind[[]string]{
	want: "a list of strings such as %s",
	decode: func(v any) ([]string, error) {
		list, ok := v.([]any)
		if !ok {
			return nil, errType
		}
		var out []string
		var errs elemErrors
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				errs = append(errs, elemError{i, errors.New("want a string")})
			}
			out = append(out, s)
		}
		if errs != nil {
			return out, errs
		}
		return out, nil
	},
	format: func(ss []string) string {
		if len(ss) == 0 {
			return "none"
		}
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	},
	equal: func(a, b []string) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	},
}

// clusterSet names the first [cluster] key other than etcd that c sets to
// something else than its default; "" if none.
func clusterSet(c *Config) string {
	d := Cluster{Lease: Duration{defaultClusterLease}, Placement: "spread", Priority: defaultPriority, OnEtcdLoss: "silent"}
	switch x := c.Cluster; {
	case x.Node != d.Node:
		return "cluster.node"
	case x.Lease != d.Lease:
		return "cluster.lease"
	case x.Placement != d.Placement:
		return "cluster.placement"
	case x.Priority != d.Priority:
		return "cluster.priority"
	case x.EtcdCA != d.EtcdCA:
		return "cluster.etcd_ca"
	case x.EtcdCert != d.EtcdCert:
		return "cluster.etcd_cert"
	case x.EtcdKey != d.EtcdKey:
		return "cluster.etcd_key"
	case x.OnEtcdLoss != d.OnEtcdLoss:
		return "cluster.on_etcd_loss"
	}
	return ""
}

// checkEtcd checks cluster.etcd: every endpoint a URL with scheme http or
// https, a host and a port, and nothing else; empty only when no other
// [cluster] key is set.
func checkEtcd(c *Config, eps []string) error {
	if len(eps) == 0 {
		if k := clusterSet(c); k != "" {
			return fmt.Errorf("required when [cluster] is used (%s is set): list the etcd endpoints, such as [\"http://198.19.0.254:2379\"], or remove the [cluster] section to run alone", k)
		}
		return nil
	}
	var errs elemErrors
	seen := map[string]bool{}
	for i, ep := range eps {
		if err := checkEndpoint(ep); err != nil {
			errs = append(errs, elemError{i, err})
			continue
		}
		if seen[ep] {
			errs = append(errs, elemError{i, fmt.Errorf("%q is listed twice", ep)})
		}
		seen[ep] = true
	}
	if errs != nil {
		return errs
	}
	return nil
}

func checkEndpoint(ep string) error {
	const want = `want a URL such as "http://198.19.0.254:2379"`
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an etcd endpoint: %s", ep, want)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: an endpoint is scheme://host:port only: %s", ep, want)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return fmt.Errorf("%q has no port: %s", ep, want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not 1..65535", ep, port)
	}
	return nil
}

// checkNode checks cluster.node: required in a cluster, a server name's
// syntax.
func checkNode(c *Config, v string) error {
	if !c.Cluster.Enabled() {
		return nil
	}
	if v == "" {
		return errors.New(`required with cluster.etcd: this gateway's unique name, such as "gw-a"`)
	}
	if err := registry.ValidateName(v); err != nil {
		var fe *registry.FieldError
		if errors.As(err, &fe) {
			return errors.New(fe.Msg)
		}
		return err
	}
	return nil
}

// checkTLSFile checks one of cluster.etcd_ca, etcd_cert, etcd_key; other
// names the key that must come with it ("" for none).
func checkTLSFile(v, other, otherName string) error {
	if v != "" && strings.TrimSpace(v) == "" {
		return errors.New("is only whitespace: give a PEM file's path, or leave it out")
	}
	if v != "" && otherName != "" && other == "" {
		return fmt.Errorf("needs %s too: a client certificate and its key come together", otherName)
	}
	return nil
}
