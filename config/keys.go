package config

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

// keys describes every key of the file, once, in the order of
// config.example.toml. Default, Parse, Validate, Changes and Reloadable all
// walk it: a new key is a field of Config and one entry here (and its
// paragraph in config.example.toml and the README).
//
// A limit that another package enforces at run time is that package's
// constant (health.MinInterval, stack.MaxGARPCount, ...), so that what the
// file may say and what the gateway takes cannot drift apart.
var keys = []key{
	// [nic]: fixed at start-up.
	&field[string]{
		name: "nic.driver", kind: text, example: `"afpacket"`,
		get:   func(c *Config) *string { return &c.NIC.Driver },
		check: func(_ *Config, v string) error { return oneOf(v, drivers) },
	},
	&field[string]{
		name: "nic.interface", kind: text, example: `"eth1"`,
		get:   func(c *Config) *string { return &c.NIC.Interface },
		check: func(_ *Config, v string) error { return checkIfName(v) },
	},
	&field[hardwareAddr]{
		name: "nic.mac", kind: mac, example: `"02:00:5e:00:53:01"`,
		get:   func(c *Config) *hardwareAddr { return &c.NIC.MAC },
		check: func(_ *Config, v hardwareAddr) error { return checkMAC(v) },
	},
	&field[int]{
		name: "nic.mtu", kind: integer, example: "1500",
		get: func(c *Config) *int { return &c.NIC.MTU },
		check: func(_ *Config, v int) error {
			if v != 0 && (v < minMTU || v > maxMTU) {
				return fmt.Errorf("%d is out of range: use 0 for the default, or %d..%d", v, minMTU, maxMTU)
			}
			return nil
		},
	},
	&field[prefixes]{
		name: "nic.networks", kind: prefixList, example: `["198.18.0.0/24"]`,
		get:   func(c *Config) *prefixes { return &c.NIC.Networks },
		check: func(_ *Config, v prefixes) error { return checkNetworks(v) },
	},
	&field[addr]{
		name: "nic.router", kind: ipAddr, example: `"198.18.0.1"`,
		get:   func(c *Config) *addr { return &c.NIC.Router },
		needs: []string{"nic.networks"},
		check: func(c *Config, v addr) error {
			if !v.IsValid() {
				return nil
			}
			return c.checkHost(v)
		},
	},
	&field[bool]{
		name: "nic.offload", kind: boolean, def: true,
		get: func(c *Config) *bool { return &c.NIC.Offload },
	},

	// [control]: fixed at start-up.
	&field[string]{
		name: "control.listen", kind: text, def: "127.0.0.1:7070",
		get:   func(c *Config) *string { return &c.Control.Listen },
		needs: []string{"control.token_file", "control.insecure"},
		check: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			return c.checkExposed(v)
		},
	},
	&field[string]{
		name: "control.token_file", kind: text, example: `"/etc/vipmux/token"`,
		get: func(c *Config) *string { return &c.Control.TokenFile },
		check: func(_ *Config, v string) error {
			if v != "" && strings.TrimSpace(v) == "" {
				return errors.New("is only whitespace: leave it out to disable token authentication")
			}
			return nil
		},
	},
	&field[bool]{
		name: "control.insecure", kind: boolean,
		get: func(c *Config) *bool { return &c.Control.Insecure },
	},
	&field[int]{
		name: "control.max_connections", kind: integer, def: 64,
		get: func(c *Config) *int { return &c.Control.MaxConnections },
		check: func(_ *Config, v int) error {
			if v < 1 || v > maxControlConnections {
				return fmt.Errorf("%d is out of range 1..%d", v, maxControlConnections)
			}
			return nil
		},
	},
	&field[string]{
		name: "control.tls_cert", kind: text, example: `"/etc/vipmux/api.pem"`,
		get:   func(c *Config) *string { return &c.Control.TLSCert },
		needs: []string{"control.tls_key"},
		check: func(c *Config, v string) error {
			if v == "" && c.Control.TLSKey != "" {
				return errors.New("missing: tls_key is set; give the certificate that goes with it, or leave both out for plain HTTP")
			}
			return nil
		},
	},
	&field[string]{
		name: "control.tls_key", kind: text, example: `"/etc/vipmux/api.key"`,
		get:   func(c *Config) *string { return &c.Control.TLSKey },
		needs: []string{"control.tls_cert"},
		check: func(c *Config, v string) error {
			if v == "" && c.Control.TLSCert != "" {
				return errors.New("missing: tls_cert is set; give its private key, or leave both out for plain HTTP")
			}
			return nil
		},
	},

	// [state]: fixed at start-up.
	&field[string]{
		name: "state.path", kind: text, def: "/var/lib/vipmux/state.json",
		get: func(c *Config) *string { return &c.State.Path },
		check: func(_ *Config, v string) error {
			if v == "" {
				return errors.New("required")
			}
			return nil
		},
	},
	&field[int]{
		name: "state.max_bindings", kind: integer, def: registry.DefaultMaxBindings,
		get:   func(c *Config) *int { return &c.State.MaxBindings },
		check: func(_ *Config, v int) error { return inRange(v, 1, registry.MaxMaxBindings, "") },
	},
	&field[int]{
		name: "state.max_members_per_port", kind: integer, def: registry.DefaultMaxMembersPerPort,
		get:   func(c *Config) *int { return &c.State.MaxMembersPerPort },
		check: func(_ *Config, v int) error { return inRange(v, 1, registry.MaxMaxMembersPerPort, "") },
	},

	// [shared]
	&field[addr]{
		name: "shared.address", kind: ipAddr, example: `"198.18.0.100"`, reloadable: true,
		get:   func(c *Config) *addr { return &c.Shared.Address },
		needs: []string{"nic.networks", "nic.router"},
		check: func(c *Config, v addr) error {
			if !v.IsValid() {
				return nil
			}
			if err := c.checkHost(v); err != nil {
				return err
			}
			if v == c.NIC.Router {
				return fmt.Errorf("%s is also nic.router", v)
			}
			return nil
		},
	},

	// [dispatch]
	&field[Duration]{
		name: "dispatch.dial_timeout", kind: duration, def: Duration{3 * time.Second}, reloadable: true,
		get: func(c *Config) *Duration { return &c.Dispatch.DialTimeout },
		check: func(_ *Config, v Duration) error {
			if d := v.Duration; d <= 0 || d > maxDialTimeout {
				return fmt.Errorf("%s is out of range: use more than 0s and at most %s", d, maxDialTimeout)
			}
			return nil
		},
	},
	&field[int]{
		name: "dispatch.max_in_flight", kind: integer, def: 8192,
		get:   func(c *Config) *int { return &c.Dispatch.MaxInFlight },
		check: func(_ *Config, v int) error { return inRange(v, 1, maxInFlight, "") },
	},
	&field[Duration]{
		name: "dispatch.time_wait", kind: duration, def: Duration{10 * time.Millisecond}, reloadable: true,
		get:   func(c *Config) *Duration { return &c.Dispatch.TimeWait },
		check: func(_ *Config, v Duration) error { return durationRange(v, 0, maxTimeWait, "") },
	},
	&field[Duration]{
		name: "dispatch.delayed_ack", kind: duration, def: Duration{2 * time.Millisecond}, reloadable: true,
		get:   func(c *Config) *Duration { return &c.Dispatch.DelayedAck },
		check: func(_ *Config, v Duration) error { return durationRange(v, 0, maxDelayedAck, " (ACK at once)") },
	},
	&field[Duration]{
		name: "dispatch.handshake_timeout", kind: duration, def: Duration{5 * time.Second}, reloadable: true,
		get: func(c *Config) *Duration { return &c.Dispatch.HandshakeTimeout },
		check: func(_ *Config, v Duration) error {
			if d := v.Duration; d <= 0 || d > maxHandshake {
				return fmt.Errorf("%s is out of range: use more than 0s and at most %s", d, maxHandshake)
			}
			return nil
		},
	},
	&field[int]{
		name: "dispatch.handshake_first_above", kind: integer, def: 256, reloadable: true,
		get:   func(c *Config) *int { return &c.Dispatch.HandshakeFirstAbove },
		check: func(_ *Config, v int) error { return inRange(v, 0, maxInFlight, " (always handshake first)") },
	},
	&field[int]{
		name: "dispatch.max_in_flight_per_source", kind: integer, def: 0, reloadable: true,
		get:   func(c *Config) *int { return &c.Dispatch.MaxInFlightPerSource },
		check: func(_ *Config, v int) error { return inRange(v, 0, maxInFlight, " (a quarter of max_in_flight)") },
	},
	&field[Duration]{
		name: "dispatch.idle_timeout", kind: duration, def: Duration{time.Hour}, reloadable: true,
		get:   func(c *Config) *Duration { return &c.Dispatch.IdleTimeout },
		check: func(_ *Config, v Duration) error { return durationRange(v, 0, maxIdleTimeout, " (never)") },
	},
	&field[int]{
		name: "dispatch.max_connections", kind: integer, def: 0, reloadable: true,
		get:   func(c *Config) *int { return &c.Dispatch.MaxConnections },
		check: func(_ *Config, v int) error { return inRange(v, 0, maxConnections, " (no cap)") },
	},

	// [health]: the health package owns the limits and the defaults. The
	// keys with port set may be overridden in [health.port.PORT].
	&field[bool]{
		name: "health.enabled", kind: boolean, def: true, reloadable: true,
		get: func(c *Config) *bool { return &c.Health.Enabled },
	},
	&field[Duration]{
		name: "health.interval", kind: duration, def: Duration{health.DefaultSettings.Interval}, reloadable: true,
		get:   func(c *Config) *Duration { return &c.Health.Interval },
		port:  func(p *HealthPort) *Duration { return &p.Interval },
		check: func(_ *Config, v Duration) error { return durationRange(v, health.MinInterval, health.MaxInterval, "") },
	},
	&field[Duration]{
		name: "health.timeout", kind: duration, def: Duration{health.DefaultSettings.Timeout}, reloadable: true,
		get:   func(c *Config) *Duration { return &c.Health.Timeout },
		port:  func(p *HealthPort) *Duration { return &p.Timeout },
		check: func(_ *Config, v Duration) error { return durationRange(v, health.MinTimeout, health.MaxTimeout, "") },
	},
	&field[int]{
		name: "health.rise", kind: integer, def: health.DefaultSettings.Rise, reloadable: true,
		get:   func(c *Config) *int { return &c.Health.Rise },
		port:  func(p *HealthPort) *int { return &p.Rise },
		check: func(_ *Config, v int) error { return inRange(v, 1, health.MaxCount, "") },
	},
	&field[int]{
		name: "health.fall", kind: integer, def: health.DefaultSettings.Fall, reloadable: true,
		get:   func(c *Config) *int { return &c.Health.Fall },
		port:  func(p *HealthPort) *int { return &p.Fall },
		check: func(_ *Config, v int) error { return inRange(v, 1, health.MaxCount, "") },
	},
	&field[bool]{
		name: "health.failback", kind: boolean, reloadable: true,
		get: func(c *Config) *bool { return &c.Health.Failback },
	},

	// [arp]: the stack owns the limits.
	&field[int]{
		name: "arp.garp_count", kind: integer, def: 3, reloadable: true,
		get:   func(c *Config) *int { return &c.ARP.GARPCount },
		check: func(_ *Config, v int) error { return inRange(v, 0, stack.MaxGARPCount, " (none)") },
	},
	&field[Duration]{
		name: "arp.garp_interval", kind: duration, def: Duration{200 * time.Millisecond}, reloadable: true,
		get: func(c *Config) *Duration { return &c.ARP.GARPInterval },
		check: func(_ *Config, v Duration) error {
			return durationRange(v, stack.MinARPInterval, stack.MaxARPInterval, "")
		},
	},
	&field[int]{
		name: "arp.dad_probes", kind: integer, def: 2, reloadable: true,
		get:   func(c *Config) *int { return &c.ARP.DADProbes },
		check: func(_ *Config, v int) error { return inRange(v, 0, stack.MaxDADProbes, " (no detection)") },
	},
	&field[Duration]{
		name: "arp.dad_interval", kind: duration, def: Duration{100 * time.Millisecond}, reloadable: true,
		get: func(c *Config) *Duration { return &c.ARP.DADInterval },
		check: func(_ *Config, v Duration) error {
			return durationRange(v, stack.MinARPInterval, stack.MaxARPInterval, "")
		},
	},
	&field[Duration]{
		name: "arp.refresh", kind: duration, reloadable: true,
		get: func(c *Config) *Duration { return &c.ARP.Refresh },
		check: func(_ *Config, v Duration) error {
			if v.Duration == 0 {
				return nil
			}
			return durationRange(v, stack.MinARPRefresh, stack.MaxARPRefresh, " (or 0, off)")
		},
	},

	// [log]
	&field[string]{
		name: "log.level", kind: text, def: "info", reloadable: true,
		get:   func(c *Config) *string { return &c.Log.Level },
		check: func(_ *Config, v string) error { return oneOf(v, logLevels) },
	},
	&field[string]{
		name: "log.format", kind: text, def: "text", reloadable: true,
		get:   func(c *Config) *string { return &c.Log.Format },
		check: func(_ *Config, v string) error { return oneOf(v, logFormats) },
	},

	// [metrics]: fixed at start-up.
	&field[string]{
		name: "metrics.listen", kind: text, example: `"198.19.0.1:9100"`,
		get:   func(c *Config) *string { return &c.Metrics.Listen },
		needs: []string{"control.listen"},
		check: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			if err := checkHostPort(v); err != nil {
				return err
			}
			if v == c.Control.Listen {
				return fmt.Errorf("%q is also control.listen, which serves /metrics already (with the token): leave metrics.listen out, or give another port", v)
			}
			return nil
		},
	},
	&field[string]{
		name: "metrics.per_member", kind: text, def: "all",
		get:   func(c *Config) *string { return &c.Metrics.PerMember },
		check: func(_ *Config, v string) error { return oneOf(v, perMember) },
	},

	// [notify]: reloadable.
	&field[string]{
		name: "notify.exec", kind: text, example: `"/usr/local/bin/vipmux-notify"`, reloadable: true,
		get: func(c *Config) *string { return &c.Notify.Exec },
		check: func(_ *Config, v string) error {
			if v != "" && !filepath.IsAbs(v) {
				return fmt.Errorf("%q is not an absolute path: the command runs without a shell and without PATH", v)
			}
			return nil
		},
	},
	&field[string]{
		name: "notify.webhook", kind: text, example: `"https://alerts.example/vipmux"`, reloadable: true,
		get: func(c *Config) *string { return &c.Notify.Webhook },
		check: func(_ *Config, v string) error {
			if v == "" {
				return nil
			}
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%q is not an http:// or https:// URL", v)
			}
			return nil
		},
	},
	&field[Duration]{
		name: "notify.timeout", kind: duration, def: Duration{5 * time.Second}, reloadable: true,
		get: func(c *Config) *Duration { return &c.Notify.Timeout },
		check: func(_ *Config, v Duration) error {
			if d := v.Duration; d < 100*time.Millisecond || d > time.Minute {
				return fmt.Errorf("%s is out of range: use 100ms..1m0s", d)
			}
			return nil
		},
	},

	// [cluster]: fixed at start-up. Without etcd, no cluster (cluster.go).
	&field[[]string]{
		name: "cluster.etcd", kind: stringList, example: `["http://198.19.0.254:2379"]`,
		get:   func(c *Config) *[]string { return &c.Cluster.Etcd },
		needs: []string{"cluster.node", "cluster.lease", "cluster.placement", "cluster.priority", "cluster.etcd_ca", "cluster.etcd_cert", "cluster.etcd_key", "cluster.on_etcd_loss"},
		check: checkEtcd,
	},
	&field[string]{
		name: "cluster.node", kind: text, example: `"gw-a"`,
		get:   func(c *Config) *string { return &c.Cluster.Node },
		needs: []string{"cluster.etcd"},
		check: checkNode,
	},
	&field[Duration]{
		name: "cluster.lease", kind: duration, def: Duration{defaultClusterLease},
		get:   func(c *Config) *Duration { return &c.Cluster.Lease },
		check: func(_ *Config, v Duration) error { return durationRange(v, MinClusterLease, MaxClusterLease, "") },
	},
	&field[string]{
		name: "cluster.placement", kind: text, def: "spread",
		get:   func(c *Config) *string { return &c.Cluster.Placement },
		check: func(_ *Config, v string) error { return oneOf(v, placements) },
	},
	&field[int]{
		name: "cluster.priority", kind: integer, def: defaultPriority,
		get:   func(c *Config) *int { return &c.Cluster.Priority },
		check: func(_ *Config, v int) error { return inRange(v, 0, maxPriority, "") },
	},
	&field[string]{
		name: "cluster.etcd_ca", kind: text, example: `"/etc/vipmux/etcd-ca.pem"`,
		get:   func(c *Config) *string { return &c.Cluster.EtcdCA },
		check: func(_ *Config, v string) error { return checkTLSFile(v, "", "") },
	},
	&field[string]{
		name: "cluster.etcd_cert", kind: text, example: `"/etc/vipmux/etcd-client.pem"`,
		get:   func(c *Config) *string { return &c.Cluster.EtcdCert },
		needs: []string{"cluster.etcd_key"},
		check: func(c *Config, v string) error { return checkTLSFile(v, c.Cluster.EtcdKey, "cluster.etcd_key") },
	},
	&field[string]{
		name: "cluster.etcd_key", kind: text, example: `"/etc/vipmux/etcd-client-key.pem"`,
		get:   func(c *Config) *string { return &c.Cluster.EtcdKey },
		needs: []string{"cluster.etcd_cert"},
		check: func(c *Config, v string) error { return checkTLSFile(v, c.Cluster.EtcdCert, "cluster.etcd_cert") },
	},
	&field[string]{
		name: "cluster.on_etcd_loss", kind: text, def: "silent",
		get:   func(c *Config) *string { return &c.Cluster.OnEtcdLoss },
		check: func(_ *Config, v string) error { return oneOf(v, etcdLossOps) },
	},
}

// portTable is the name of the per-port health tables, [health.port.PORT];
// the keys with a port accessor may appear in them.
const portTable = "health.port"

// A key is one entry of keys. field is its only implementation; the
// interface lets keys of different Go types share one table.
type key interface {
	// keyName is the key as the file spells it, "section.key".
	keyName() string
	// isReloadable reports whether a running gateway applies a change.
	isReloadable() bool
	// dependsOn are the keys whose values the check reads: when one of
	// them did not parse, the check would judge a value that the file
	// does not hold, so it is skipped.
	dependsOn() []string
	setDefault(c *Config)
	// decode stores v, a value as the TOML decoder returns it, in c. Its
	// error says what to write instead; elements of a list are reported
	// as elemErrors.
	decode(c *Config, v any) error
	// validate reports what is wrong with the key's value in c.
	validate(c *Config) error
	// format renders the key's value in c as the file would write it;
	// "none" for an empty value without a default.
	format(c *Config) string
	// show renders the key's value in c for a Change.
	show(c *Config) string
	equal(a, b *Config) bool
	// literal is the key's example value as the file would write it:
	// its default, or an example for a key without one.
	literal() string

	// perPort reports whether [health.port.PORT] may override the key;
	// the port methods below apply only then.
	perPort() bool
	// inherit copies the key's [health] value in c into p.
	inherit(p *HealthPort, c *Config)
	decodePort(p *HealthPort, v any) error
	// checkPort checks p's value. A value that p inherits from a bad
	// [health] key is not reported again.
	checkPort(c *Config, p *HealthPort) error
	formatPort(p *HealthPort) string
	equalPort(a, b *HealthPort) bool
}

// field is a key whose value is a T in Config.
type field[T any] struct {
	// name is the key as the file spells it, "section.key".
	name string
	// kind is how a T is read from TOML, written back, and compared.
	kind kind[T]
	// def is the default, the value of a key that the file leaves out.
	def T
	// example, if set, is the value that "want ..." messages show,
	// written as in the file, instead of the default: for a key whose
	// default is empty, or says nothing of the syntax (nic.mtu's 0).
	example string
	// reloadable: a running gateway applies a change of the key. Every
	// other key is fixed at start-up.
	reloadable bool
	// get returns the key's place in a Config.
	get func(*Config) *T
	// port, if set, returns the key's place in a [health.port.PORT]
	// table, which inherits the [health] value when it leaves the key
	// out.
	port func(*HealthPort) *T
	// check, if set, reports what is wrong with a value; c is the whole
	// configuration, for keys that depend on others.
	check func(c *Config, v T) error
	// needs are the keys that check reads besides this one.
	needs []string
}

func (f *field[T]) keyName() string      { return f.name }
func (f *field[T]) isReloadable() bool   { return f.reloadable }
func (f *field[T]) dependsOn() []string  { return f.needs }
func (f *field[T]) setDefault(c *Config) { *f.get(c) = f.def }
func (f *field[T]) perPort() bool        { return f.port != nil }

func (f *field[T]) literal() string {
	if f.example != "" {
		return f.example
	}
	return f.kind.format(f.def)
}

// want is what to write for the key: "want a duration string such as
// "100ms"".
func (f *field[T]) want() string { return "want " + fmt.Sprintf(f.kind.want, f.literal()) }

func (f *field[T]) decodeInto(dst *T, v any) error {
	x, err := f.kind.decode(v)
	var ee elemErrors
	switch {
	case err == nil:
		*dst = x
		return nil
	case errors.Is(err, errType):
		return errors.New(f.want())
	case errors.As(err, &ee):
		// The elements that parsed are kept, each at its index, so that
		// the checks report the others under the right index too.
		*dst = x
		return err
	}
	return fmt.Errorf("%w: %s", err, f.want())
}

func (f *field[T]) decode(c *Config, v any) error { return f.decodeInto(f.get(c), v) }

func (f *field[T]) checkValue(c *Config, v T) error {
	if f.check == nil {
		return nil
	}
	return f.check(c, v)
}

func (f *field[T]) validate(c *Config) error { return f.checkValue(c, *f.get(c)) }
func (f *field[T]) format(c *Config) string  { return f.kind.format(*f.get(c)) }

func (f *field[T]) show(c *Config) string {
	if f.kind.show != nil {
		return f.kind.show(*f.get(c))
	}
	return f.format(c)
}

func (f *field[T]) equal(a, b *Config) bool { return f.kind.equal(*f.get(a), *f.get(b)) }

func (f *field[T]) inherit(p *HealthPort, c *Config)      { *f.port(p) = *f.get(c) }
func (f *field[T]) decodePort(p *HealthPort, v any) error { return f.decodeInto(f.port(p), v) }
func (f *field[T]) formatPort(p *HealthPort) string       { return f.kind.format(*f.port(p)) }
func (f *field[T]) equalPort(a, b *HealthPort) bool       { return f.kind.equal(*f.port(a), *f.port(b)) }

func (f *field[T]) checkPort(c *Config, p *HealthPort) error {
	v, parent := *f.port(p), *f.get(c)
	if f.kind.equal(v, parent) && f.checkValue(c, parent) != nil {
		return nil
	}
	return f.checkValue(c, v)
}

// lastName is the key's name within its section: "interval" for
// "health.interval".
func lastName(name string) string { return name[strings.LastIndexByte(name, '.')+1:] }

// portKeys are the keys that [health.port.PORT] may override, in the
// order of keys.
func portKeys() []key {
	var out []key
	for _, k := range keys {
		if k.perPort() {
			out = append(out, k)
		}
	}
	return out
}

// paths are the names under which k may appear in the file, as
// dot-separated segments; "*" stands for a port number.
func paths(k key) [][]string {
	out := [][]string{strings.Split(k.keyName(), ".")}
	if k.perPort() {
		out = append(out, append(strings.Split(portTable, "."), "*", lastName(k.keyName())))
	}
	return out
}

// patterns are the paths of every key.
func patterns() [][]string {
	var out [][]string
	for _, k := range keys {
		out = append(out, paths(k)...)
	}
	return out
}

// within reports whether path is pattern, or a table on the way to it.
func within(path, pattern []string) bool {
	return len(path) <= len(pattern) &&
		slices.EqualFunc(path, pattern[:len(path)], func(a, b string) bool { return a == b || b == "*" })
}

// match reports whether path is a key of the file (leaf) or a table on the
// way to one (section).
func match(path []string) (leaf, section bool) {
	for _, p := range patterns() {
		if !within(path, p) {
			continue
		}
		if len(path) == len(p) {
			leaf = true
		} else {
			section = true
		}
	}
	return leaf, section
}

// inRange checks an integer against lo..hi; note follows lo in the message,
// e.g. " (none)".
func inRange(n, lo, hi int, note string) error {
	if n < lo || n > hi {
		return fmt.Errorf("%d is out of range: use %d%s..%d", n, lo, note, hi)
	}
	return nil
}

// durationRange checks a duration against lo..hi, like inRange.
func durationRange(d Duration, lo, hi time.Duration, note string) error {
	if d.Duration < lo || d.Duration > hi {
		return fmt.Errorf("%s is out of range: use %s%s..%s", d.Duration, lo, note, hi)
	}
	return nil
}

// Keys returns the name of every key, "section.key", in the order of
// config.example.toml; for documentation and its tests.
func Keys() []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.keyName()
	}
	return names
}
