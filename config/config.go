// Package config reads vipmux's configuration file: TOML decoded strictly
// into typed structs, with every default in Default and every rule in
// Validate. Each problem that Parse or Validate reports names its key as
// "section.key" (and, where there is one, the bad value), so that an
// operator can fix the file without reading this code.
//
// The package knows the shape of the configuration, not what the other
// packages do with it: it opens no interface and binds no socket.
//
//	cfg, err := config.Load("/etc/vipmux/config.toml")
//	if err != nil {
//		return err // every problem, one per line
//	}
//
// config.example.toml at the repository root documents every key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is vipmux's configuration file.
type Config struct {
	NIC      NIC
	Control  Control
	State    State
	Shared   Shared
	Dispatch Dispatch
	Health   Health
	ARP      ARP
	Log      Log
	Metrics  Metrics
}

// NIC is the [nic] section: the front link that the userspace stack owns.
type NIC struct {
	// Driver is [nic] driver: "afpacket" (take over an existing interface)
	// or "tap" (create a TAP device). Required.
	Driver string
	// Interface is [nic] interface: required; a valid Linux interface name
	// (1-15 bytes, no '/', no whitespace, not "." or "..").
	Interface string
	// MAC is [nic] mac: optional; nil means the default (the interface's
	// own MAC for afpacket, a random locally administered one for tap). If
	// given it must be a 6-byte unicast MAC.
	MAC net.HardwareAddr
	// MTU is [nic] mtu: optional; 0 means the default (the interface's MTU
	// for afpacket, 1500 for tap); otherwise 576..65535.
	MTU int
	// Networks is [nic] networks: the on-link front subnets, at least one,
	// e.g. "198.18.0.0/24" or "2001:db8:18::/64"; IPv4 and IPv6 may be
	// mixed. Parse stores them Masked.
	Networks []netip.Prefix
	// Router is [nic] router: optional next hop for off-link clients of
	// its family (IPv4 or IPv6); it must lie in one of Networks. The zero
	// value means none.
	Router netip.Addr
	// Offload is [nic] offload: hand the host kernel 64 KiB TCP segments
	// to split (GSO) and take coalesced ones from it (GRO), through a
	// virtio-net header on the packet socket. Default true; the nic
	// driver falls back to per-frame I/O where the kernel lacks support.
	Offload bool
}

// Control is the [control] section: the HTTP/JSON control API.
type Control struct {
	// Listen is [control] listen: the API's host:port; default
	// "127.0.0.1:7070".
	Listen string
	// TokenFile is [control] token_file: optional; when set, every API
	// request needs "Authorization: Bearer <token>" with the file's
	// contents as the token.
	TokenFile string
}

// State is the [state] section: where the registry's table survives a
// restart.
type State struct {
	// Path is [state] path: the state file; default
	// "/var/lib/vipmux/state.json".
	Path string
}

// Shared is the [shared] section: mode 2's common address.
type Shared struct {
	// Address is [shared] address: optional; mode 2's common IP (IPv4 or
	// IPv6), which must lie in one of NIC.Networks. The zero value means
	// none.
	Address netip.Addr
}

// Dispatch is the [dispatch] section: the TCP forwarder.
type Dispatch struct {
	// DialTimeout is [dispatch] dial_timeout: how long the gateway waits
	// for a backend before answering the client's SYN with RST; default
	// 3s, > 0 and <= 60s.
	DialTimeout Duration
	// MaxInFlight is [dispatch] max_in_flight: how many SYNs may be
	// dialled at once; default 8192, 1..65536.
	MaxInFlight int
	// TimeWait is [dispatch] time_wait: TCP TIME_WAIT on the gateway's
	// client-side connections; default 10ms, 0..60s. A client's SYN that
	// meets one of them waits out the TIME_WAIT and a 1 s retransmit (see
	// config.example.toml).
	TimeWait Duration
	// DelayedAck is [dispatch] delayed_ack: how long a client-side TCP
	// connection may hold back the ACK of a request for the response to
	// carry it; default 2ms, 0 (ACK at once)..500ms. It applies to the
	// connections established after it is set.
	DelayedAck Duration
}

// Health is the [health] section: the gateway's TCP-connect checks of
// every mode-2 member's backend, and automatic failover.
type Health struct {
	// Enabled is [health] enabled: default true; false probes nothing (a
	// member is then down only when its lease runs out).
	Enabled bool
	// Interval is [health] interval: time between two probes of a member;
	// default 100ms, 10ms..1h.
	Interval Duration
	// Timeout is [health] timeout: how long one probe (TCP connect) may
	// take; default 100ms, 1ms..1m.
	Timeout Duration
	// Rise is [health] rise: consecutive successful probes that bring a
	// down member up; default 2, 1..100.
	Rise int
	// Fall is [health] fall: consecutive failed probes that mark a member
	// down; default 2, 1..100.
	Fall int
	// Failback is [health] failback: make a former active that failover
	// demoted active again once it recovers; default false (no flapping
	// back). It applies to every port.
	Failback bool
	// Port is the [health.port.PORT] tables: per-port overrides of
	// interval, timeout, rise and fall. Parse fills the keys that a port
	// leaves out with the [health] values.
	Port map[uint16]HealthPort
}

// HealthPort is one [health.port.PORT] table.
type HealthPort struct {
	Interval Duration
	Timeout  Duration
	Rise     int
	Fall     int
}

// ARP is the [arp] section: how the gateway claims the addresses it holds
// on the front link (RFC 5227).
type ARP struct {
	// GARPCount is [arp] garp_count: gratuitous ARP announcements sent
	// whenever the gateway starts holding an address (start-up, restore,
	// register), so that neighbours update their caches at once; default
	// 3, 0..100 (0 sends none).
	GARPCount int
	// GARPInterval is [arp] garp_interval: time between two announcements
	// of one address; default 200ms, 10ms..10s.
	GARPInterval Duration
	// DADProbes is [arp] dad_probes: ARP probes sent before the gateway
	// holds a newly registered address; a host that answers makes the
	// registration fail with 409 naming its MAC. Each new address delays
	// its registration by dad_probes x dad_interval. Addresses restored
	// from the state file and [shared] address are not probed. Default 2,
	// 0..20 (0 disables detection).
	DADProbes int
	// DADInterval is [arp] dad_interval: time between two probes, and how
	// long the last one waits for an answer; default 100ms, 10ms..10s.
	DADInterval Duration
}

// Log is the [log] section.
type Log struct {
	// Level is [log] level: "debug", "info" (default), "warn" or "error".
	Level string
	// Format is [log] format: "text" (default) or "json".
	Format string
}

// Metrics is the [metrics] section: where Prometheus scrapes the gateway.
type Metrics struct {
	// Listen is [metrics] listen: optional host:port of a second HTTP
	// listener that serves only GET /metrics, without the control token,
	// so that a scraper needs no credentials that can change the table.
	// Empty (the default) means none; /metrics is always served on
	// [control] listen too, behind the token. Must differ from
	// control.listen.
	Listen string
}

// Duration is a time.Duration that decodes from a TOML string such as "3s"
// (see time.ParseDuration).
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// Limits and choices that Validate enforces.
const (
	minMTU         = 576
	maxMTU         = 65535
	maxDialTimeout = 60 * time.Second
	maxTimeWait    = 60 * time.Second
	maxDelayedAck  = 500 * time.Millisecond
	maxInFlight    = 65536
	maxIfNameLen   = 15 // IFNAMSIZ - 1

	minHealthInterval = 10 * time.Millisecond
	maxHealthInterval = time.Hour
	minHealthTimeout  = time.Millisecond
	maxHealthTimeout  = time.Minute
	maxHealthCount    = 100

	maxGARPCount   = 100
	maxDADProbes   = 20
	minARPInterval = 10 * time.Millisecond
	maxARPInterval = 10 * time.Second
)

var (
	drivers    = []string{"afpacket", "tap"}
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

// Default returns a configuration with every default set. It leaves the
// keys without a default empty (nic.driver, nic.interface, nic.networks),
// so it does not pass Validate on its own.
func Default() *Config {
	return &Config{
		NIC: NIC{
			Offload: true,
		},
		Control: Control{
			Listen: "127.0.0.1:7070",
		},
		State: State{
			Path: "/var/lib/vipmux/state.json",
		},
		Dispatch: Dispatch{
			DialTimeout: Duration{3 * time.Second},
			MaxInFlight: 8192,
			TimeWait:    Duration{10 * time.Millisecond},
			DelayedAck:  Duration{2 * time.Millisecond},
		},
		Health: Health{
			Enabled:  true,
			Interval: Duration{100 * time.Millisecond},
			Timeout:  Duration{100 * time.Millisecond},
			Rise:     2,
			Fall:     2,
		},
		ARP: ARP{
			GARPCount:    3,
			GARPInterval: Duration{200 * time.Millisecond},
			DADProbes:    2,
			DADInterval:  Duration{100 * time.Millisecond},
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
	}
}

// Load reads the file at path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// raw is the file as TOML sees it: the keys that need parsing with their
// own error messages (addresses, prefixes, durations) are strings here, so
// that Parse can name the key and the value in every error.
type raw struct {
	NIC struct {
		Driver    string   `toml:"driver"`
		Interface string   `toml:"interface"`
		MAC       string   `toml:"mac"`
		MTU       int      `toml:"mtu"`
		Networks  []string `toml:"networks"`
		Router    string   `toml:"router"`
		Offload   bool     `toml:"offload"`
	} `toml:"nic"`
	Control struct {
		Listen    string `toml:"listen"`
		TokenFile string `toml:"token_file"`
	} `toml:"control"`
	State struct {
		Path string `toml:"path"`
	} `toml:"state"`
	Shared struct {
		Address string `toml:"address"`
	} `toml:"shared"`
	Dispatch struct {
		DialTimeout string `toml:"dial_timeout"`
		MaxInFlight int    `toml:"max_in_flight"`
		TimeWait    string `toml:"time_wait"`
		DelayedAck  string `toml:"delayed_ack"`
	} `toml:"dispatch"`
	Health struct {
		Enabled  bool                     `toml:"enabled"`
		Interval string                   `toml:"interval"`
		Timeout  string                   `toml:"timeout"`
		Rise     int                      `toml:"rise"`
		Fall     int                      `toml:"fall"`
		Failback bool                     `toml:"failback"`
		Port     map[string]rawHealthPort `toml:"port"`
	} `toml:"health"`
	ARP struct {
		GARPCount    int    `toml:"garp_count"`
		GARPInterval string `toml:"garp_interval"`
		DADProbes    int    `toml:"dad_probes"`
		DADInterval  string `toml:"dad_interval"`
	} `toml:"arp"`
	Log struct {
		Level  string `toml:"level"`
		Format string `toml:"format"`
	} `toml:"log"`
	Metrics struct {
		Listen string `toml:"listen"`
	} `toml:"metrics"`
}

// rawHealthPort is one [health.port.PORT] table; nil is a key left out.
type rawHealthPort struct {
	Interval *string `toml:"interval"`
	Timeout  *string `toml:"timeout"`
	Rise     *int    `toml:"rise"`
	Fall     *int    `toml:"fall"`
}

// Parse decodes data strictly (an unknown key is an error), fills in the
// defaults for the keys that it leaves out and validates the result. The
// error lists every problem found, each naming its key.
func Parse(data []byte) (*Config, error) {
	def := Default()
	var r raw
	// Start from the defaults; the decoder overwrites only the keys present.
	r.NIC.Offload = def.NIC.Offload
	r.Control.Listen = def.Control.Listen
	r.State.Path = def.State.Path
	r.Dispatch.DialTimeout = def.Dispatch.DialTimeout.String()
	r.Dispatch.MaxInFlight = def.Dispatch.MaxInFlight
	r.Dispatch.TimeWait = def.Dispatch.TimeWait.String()
	r.Dispatch.DelayedAck = def.Dispatch.DelayedAck.String()
	r.ARP.GARPCount = def.ARP.GARPCount
	r.ARP.GARPInterval = def.ARP.GARPInterval.String()
	r.ARP.DADProbes = def.ARP.DADProbes
	r.ARP.DADInterval = def.ARP.DADInterval.String()
	r.Health.Enabled = def.Health.Enabled
	r.Health.Interval = def.Health.Interval.String()
	r.Health.Timeout = def.Health.Timeout.String()
	r.Health.Rise = def.Health.Rise
	r.Health.Fall = def.Health.Fall
	r.Log.Level = def.Log.Level
	r.Log.Format = def.Log.Format

	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&r)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &syntaxError{pe: pe}
		}
		return nil, err
	}

	var errs []error
	errs = append(errs, unknownKeys(md.Undecoded())...)

	// bad holds the keys that failed to parse, so that Validate does not
	// pile its own complaints about the same (now zero) values on top.
	bad := map[string]bool{}
	fail := func(key string, format string, args ...any) {
		bad[key] = true
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}

	c := def
	c.NIC.Driver = r.NIC.Driver
	c.NIC.Interface = r.NIC.Interface
	c.NIC.MTU = r.NIC.MTU
	c.NIC.Offload = r.NIC.Offload
	if r.NIC.MAC != "" {
		mac, err := net.ParseMAC(r.NIC.MAC)
		if err != nil {
			fail("nic.mac", "%q is not a MAC address", r.NIC.MAC)
		} else {
			c.NIC.MAC = mac
		}
	}
	for i, s := range r.NIC.Networks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			// Keep an invalid placeholder so that later indices still
			// match the file.
			bad["nic.networks"] = true
			fail(fmt.Sprintf("nic.networks[%d]", i), "%q is not a CIDR prefix", s)
		}
		c.NIC.Networks = append(c.NIC.Networks, p.Masked())
	}
	if r.NIC.Router != "" {
		a, err := netip.ParseAddr(r.NIC.Router)
		if err != nil {
			fail("nic.router", "%q is not an IP address", r.NIC.Router)
		} else {
			c.NIC.Router = a
		}
	}
	c.Control.Listen = r.Control.Listen
	c.Control.TokenFile = r.Control.TokenFile
	c.State.Path = r.State.Path
	if r.Shared.Address != "" {
		a, err := netip.ParseAddr(r.Shared.Address)
		if err != nil {
			fail("shared.address", "%q is not an IP address", r.Shared.Address)
		} else {
			c.Shared.Address = a
		}
	}
	if d, err := time.ParseDuration(r.Dispatch.DialTimeout); err != nil {
		fail("dispatch.dial_timeout", "%q is not a duration such as \"3s\"", r.Dispatch.DialTimeout)
	} else {
		c.Dispatch.DialTimeout = Duration{d}
	}
	c.Dispatch.MaxInFlight = r.Dispatch.MaxInFlight
	if d, err := time.ParseDuration(r.Dispatch.TimeWait); err != nil {
		fail("dispatch.time_wait", "%q is not a duration such as \"1s\"", r.Dispatch.TimeWait)
	} else {
		c.Dispatch.TimeWait = Duration{d}
	}
	if d, err := time.ParseDuration(r.Dispatch.DelayedAck); err != nil {
		fail("dispatch.delayed_ack", "%q is not a duration such as \"2ms\"", r.Dispatch.DelayedAck)
	} else {
		c.Dispatch.DelayedAck = Duration{d}
	}
	parseHealth(c, &r, fail)
	c.ARP.GARPCount = r.ARP.GARPCount
	if d, err := time.ParseDuration(r.ARP.GARPInterval); err != nil {
		fail("arp.garp_interval", "%q is not a duration such as \"200ms\"", r.ARP.GARPInterval)
	} else {
		c.ARP.GARPInterval = Duration{d}
	}
	c.ARP.DADProbes = r.ARP.DADProbes
	if d, err := time.ParseDuration(r.ARP.DADInterval); err != nil {
		fail("arp.dad_interval", "%q is not a duration such as \"100ms\"", r.ARP.DADInterval)
	} else {
		c.ARP.DADInterval = Duration{d}
	}
	c.Log.Level = r.Log.Level
	c.Log.Format = r.Log.Format
	c.Metrics.Listen = r.Metrics.Listen

	errs = append(errs, c.validate(bad)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// parseHealth fills c.Health from r's [health] and [health.port.PORT]
// tables, reporting the keys that do not parse with fail.
func parseHealth(c *Config, r *raw, fail func(key, format string, args ...any)) {
	h := &c.Health
	h.Enabled, h.Rise, h.Fall, h.Failback = r.Health.Enabled, r.Health.Rise, r.Health.Fall, r.Health.Failback
	duration := func(key, s string, d *Duration) {
		v, err := time.ParseDuration(s)
		if err != nil {
			fail(key, "%q is not a duration such as \"100ms\"", s)
			return
		}
		*d = Duration{v}
	}
	duration("health.interval", r.Health.Interval, &h.Interval)
	duration("health.timeout", r.Health.Timeout, &h.Timeout)
	for name, rp := range r.Health.Port {
		key := "health.port." + name
		n, err := strconv.ParseUint(name, 10, 16)
		if err != nil || n == 0 {
			fail(key, "%q is not a port number 1..65535", name)
			continue
		}
		p := HealthPort{Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
		if rp.Interval != nil {
			duration(key+".interval", *rp.Interval, &p.Interval)
		}
		if rp.Timeout != nil {
			duration(key+".timeout", *rp.Timeout, &p.Timeout)
		}
		if rp.Rise != nil {
			p.Rise = *rp.Rise
		}
		if rp.Fall != nil {
			p.Fall = *rp.Fall
		}
		if h.Port == nil {
			h.Port = map[uint16]HealthPort{}
		}
		h.Port[uint16(n)] = p
	}
}

// unknownKeys reports the keys that the decoder did not use. A key inside
// an unknown table is not reported on its own: the table is.
func unknownKeys(keys []toml.Key) []error {
	unknown := make(map[string]bool, len(keys))
	for _, k := range keys {
		unknown[k.String()] = true
	}
	var errs []error
	for _, k := range keys {
		if len(k) > 1 && unknown[k[:len(k)-1].String()] {
			continue
		}
		errs = append(errs, &unknownKeyError{KeyError{Key: k.String(), Err: errors.New("unknown key")}})
	}
	return errs
}

// unknownKeyError is a key that the file has and Config does not; it reads
// "unknown key KEY".
type unknownKeyError struct{ KeyError }

func (e *unknownKeyError) Error() string { return "unknown key " + e.Key }

// Unwrap returns the KeyError, for errors.As.
func (e *unknownKeyError) Unwrap() error { return &e.KeyError }

// syntaxError is a TOML syntax or type error, with its line and column.
type syntaxError struct {
	pe toml.ParseError
}

func (e *syntaxError) Error() string {
	p := e.pe.Position
	if e.pe.LastKey == "" {
		return fmt.Sprintf("toml: line %d, column %d: %s", p.Line, p.Col, e.pe.Message)
	}
	return fmt.Sprintf("toml: line %d, column %d (last key %q): %s", p.Line, p.Col, e.pe.LastKey, e.pe.Message)
}

// Unwrap returns the toml.ParseError, whose ErrorWithPosition shows the
// offending line.
func (e *syntaxError) Unwrap() error { return e.pe }

// Validate checks every key and returns all the problems found, joined with
// errors.Join, each naming its key as "section.key"; nil if there are none.
func (c *Config) Validate() error {
	return errors.Join(c.validate(nil)...)
}

// validate returns one error per problem, skipping the keys in skip (which
// the caller has already reported).
func (c *Config) validate(skip map[string]bool) []error {
	var errs []error
	check := func(key string, err error) {
		if err != nil && !skip[key] {
			errs = append(errs, &KeyError{Key: key, Err: err})
		}
	}

	check("nic.driver", oneOf(c.NIC.Driver, drivers))
	check("nic.interface", checkIfName(c.NIC.Interface))
	check("nic.mac", checkMAC(c.NIC.MAC))
	if c.NIC.MTU != 0 && (c.NIC.MTU < minMTU || c.NIC.MTU > maxMTU) {
		check("nic.mtu", fmt.Errorf("%d is out of range: use 0 for the default, or %d..%d", c.NIC.MTU, minMTU, maxMTU))
	}
	if len(c.NIC.Networks) == 0 {
		check("nic.networks", errors.New("required: at least one front subnet such as \"198.18.0.0/24\""))
	}
	for i, p := range c.NIC.Networks {
		check(fmt.Sprintf("nic.networks[%d]", i), checkNetwork(p))
		for j, q := range c.NIC.Networks[:i] {
			if p.IsValid() && q.IsValid() && p.Overlaps(q) {
				check(fmt.Sprintf("nic.networks[%d]", i), fmt.Errorf("%s overlaps nic.networks[%d] %s", p, j, q))
				break
			}
		}
	}
	// With a network that did not parse, "not in the networks" may be
	// wrong; the parse error is already reported.
	netsKnown := !skip["nic.networks"]
	if c.NIC.Router.IsValid() && netsKnown {
		check("nic.router", c.checkHost(c.NIC.Router))
	}

	if err := checkHostPort(c.Control.Listen); err != nil {
		check("control.listen", err)
	}
	if c.Control.TokenFile != "" && strings.TrimSpace(c.Control.TokenFile) == "" {
		check("control.token_file", errors.New("is only whitespace: leave it out to disable token authentication"))
	}

	if c.State.Path == "" {
		check("state.path", errors.New("required"))
	}

	if c.Shared.Address.IsValid() && netsKnown {
		err := c.checkHost(c.Shared.Address)
		if err == nil && c.Shared.Address == c.NIC.Router {
			err = fmt.Errorf("%s is also nic.router", c.Shared.Address)
		}
		check("shared.address", err)
	}

	if d := c.Dispatch.DialTimeout.Duration; d <= 0 || d > maxDialTimeout {
		check("dispatch.dial_timeout", fmt.Errorf("%s is out of range: use more than 0s and at most %s", d, maxDialTimeout))
	}
	if n := c.Dispatch.MaxInFlight; n < 1 || n > maxInFlight {
		check("dispatch.max_in_flight", fmt.Errorf("%d is out of range: use 1..%d", n, maxInFlight))
	}
	if d := c.Dispatch.TimeWait.Duration; d < 0 || d > maxTimeWait {
		check("dispatch.time_wait", fmt.Errorf("%s is out of range: use 0s..%s", d, maxTimeWait))
	}
	if d := c.Dispatch.DelayedAck.Duration; d < 0 || d > maxDelayedAck {
		check("dispatch.delayed_ack", fmt.Errorf("%s is out of range: use 0s (ACK at once)..%s", d, maxDelayedAck))
	}

	if n := c.ARP.GARPCount; n < 0 || n > maxGARPCount {
		check("arp.garp_count", fmt.Errorf("%d is out of range: use 0 (none)..%d", n, maxGARPCount))
	}
	check("arp.garp_interval", checkARPInterval(c.ARP.GARPInterval.Duration))
	if n := c.ARP.DADProbes; n < 0 || n > maxDADProbes {
		check("arp.dad_probes", fmt.Errorf("%d is out of range: use 0 (no detection)..%d", n, maxDADProbes))
	}
	check("arp.dad_interval", checkARPInterval(c.ARP.DADInterval.Duration))

	check("health.interval", checkHealthInterval(c.Health.Interval.Duration))
	check("health.timeout", checkHealthTimeout(c.Health.Timeout.Duration))
	check("health.rise", checkHealthCount(c.Health.Rise))
	check("health.fall", checkHealthCount(c.Health.Fall))
	ports := slices.Sorted(maps.Keys(c.Health.Port))
	for _, port := range ports {
		p, key := c.Health.Port[port], fmt.Sprintf("health.port.%d", port)
		if port == 0 {
			check(key, errors.New("0 is not a port number 1..65535"))
			continue
		}
		// A value that a port inherits from a bad [health] key is
		// reported once, under [health].
		if h := c.Health; p.Interval != h.Interval || checkHealthInterval(h.Interval.Duration) == nil {
			check(key+".interval", checkHealthInterval(p.Interval.Duration))
		}
		if h := c.Health; p.Timeout != h.Timeout || checkHealthTimeout(h.Timeout.Duration) == nil {
			check(key+".timeout", checkHealthTimeout(p.Timeout.Duration))
		}
		if h := c.Health; p.Rise != h.Rise || checkHealthCount(h.Rise) == nil {
			check(key+".rise", checkHealthCount(p.Rise))
		}
		if h := c.Health; p.Fall != h.Fall || checkHealthCount(h.Fall) == nil {
			check(key+".fall", checkHealthCount(p.Fall))
		}
	}

	check("log.level", oneOf(c.Log.Level, logLevels))
	check("log.format", oneOf(c.Log.Format, logFormats))
	if c.Metrics.Listen != "" {
		err := checkHostPort(c.Metrics.Listen)
		if err == nil && c.Metrics.Listen == c.Control.Listen {
			err = fmt.Errorf("%q is also control.listen, which serves /metrics already (with the token): leave metrics.listen out, or give another port", c.Metrics.Listen)
		}
		check("metrics.listen", err)
	}
	return errs
}

func checkHealthInterval(d time.Duration) error {
	if d < minHealthInterval || d > maxHealthInterval {
		return fmt.Errorf("%s is out of range: use %s..%s", d, minHealthInterval, maxHealthInterval)
	}
	return nil
}

func checkHealthTimeout(d time.Duration) error {
	if d < minHealthTimeout || d > maxHealthTimeout {
		return fmt.Errorf("%s is out of range: use %s..%s", d, minHealthTimeout, maxHealthTimeout)
	}
	return nil
}

func checkHealthCount(n int) error {
	if n < 1 || n > maxHealthCount {
		return fmt.Errorf("%d is out of range: use 1..%d", n, maxHealthCount)
	}
	return nil
}

// checkARPInterval checks an [arp] interval.
func checkARPInterval(d time.Duration) error {
	if d < minARPInterval || d > maxARPInterval {
		return fmt.Errorf("%s is out of range: use %s..%s", d, minARPInterval, maxARPInterval)
	}
	return nil
}

// oneOf checks that v is one of choices.
func oneOf(v string, choices []string) error {
	if v == "" {
		return fmt.Errorf("required: use one of %s", quoteAll(choices))
	}
	if !slices.Contains(choices, v) {
		return fmt.Errorf("%q is not one of %s", v, quoteAll(choices))
	}
	return nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// checkIfName applies the kernel's rules for interface names
// (dev_valid_name in net/core/dev.c).
func checkIfName(name string) error {
	switch {
	case name == "":
		return errors.New("required: the front interface's name, e.g. \"eth1\"")
	case len(name) > maxIfNameLen:
		return fmt.Errorf("%q is longer than %d bytes", name, maxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	case strings.ContainsFunc(name, func(r rune) bool {
		// The kernel rejects '/', ':' and isspace(); a NUL would end the
		// name early.
		return r == '/' || r == ':' || r == 0 || r == ' ' || (r >= '\t' && r <= '\r') || r == 0x85 || r == 0xa0
	}):
		return fmt.Errorf("%q: interface names may not contain '/', ':' or whitespace", name)
	}
	return nil
}

// checkMAC accepts nil (the default) or a 6-byte unicast MAC.
func checkMAC(mac net.HardwareAddr) error {
	switch {
	case mac == nil:
		return nil
	case len(mac) != 6:
		return fmt.Errorf("%q is not a 6-byte Ethernet MAC address", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("%s is a multicast address: the NIC needs a unicast MAC", mac)
	case [6]byte(mac) == [6]byte{}:
		return fmt.Errorf("%s is the all-zero address", mac)
	}
	return nil
}

// checkNetwork checks one front subnet, IPv4 or IPv6.
func checkNetwork(p netip.Prefix) error {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return errors.New("not a valid CIDR prefix")
	case a.Zone() != "":
		return fmt.Errorf("%s: a prefix with a zone is not a front subnet", p)
	case a.Is4In6():
		return fmt.Errorf("%s is an IPv4-mapped IPv6 prefix: write the IPv4 subnet", p)
	case a.Is6() && (a.IsMulticast() || p.Overlaps(netip.MustParsePrefix("ff00::/8"))):
		return fmt.Errorf("%s is an IPv6 multicast prefix: use a unicast (global or unique local) one", p)
	case a.Is6() && (a.IsLinkLocalUnicast() || p.Overlaps(netip.MustParsePrefix("fe80::/10"))):
		return fmt.Errorf("%s is IPv6 link-local: use a global or unique local prefix", p)
	case a.Is6() && p.Contains(netip.IPv6Loopback()):
		return fmt.Errorf("%s contains the loopback address ::1", p)
	case p != p.Masked():
		return fmt.Errorf("%s has host bits set: use %s", p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("%s covers every address: use the front link's subnet", p)
	}
	return nil
}

// checkHost checks that a lies in one of the networks as a host address:
// not the network or broadcast address of an IPv4 subnet larger than /31,
// not the subnet-router anycast address (all-zero interface identifier) of
// an IPv6 subnet larger than /127.
func (c *Config) checkHost(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s has a zone: give a global or unique local address", a)
	case a.Is4In6():
		return fmt.Errorf("%s is IPv4-mapped: write %s", a, a.Unmap())
	}
	for _, p := range c.NIC.Networks {
		if !p.Contains(a) {
			continue
		}
		p = p.Masked()
		if a.Is4() && p.Bits() < 31 && (a == p.Addr() || a == lastAddr(p)) {
			return fmt.Errorf("%s is the network or broadcast address of %s", a, p)
		}
		if a.Is6() && p.Bits() < 127 && a == p.Addr() {
			return fmt.Errorf("%s is the subnet-router anycast address of %s", a, p)
		}
		return nil
	}
	return fmt.Errorf("%s is outside nic.networks %v", a, c.NIC.Networks)
}

// lastAddr returns the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// checkHostPort checks a listen address: host:port with a numeric port.
// An empty host means every address.
func checkHostPort(s string) error {
	if s == "" {
		return errors.New("required: a host:port such as \"127.0.0.1:7070\"")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", s, port)
	}
	return nil
}
