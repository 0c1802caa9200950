// Package config reads vipmux's configuration file: TOML decoded strictly
// into typed structs. Every key is described once, in the table in
// keys.go (its name, default, kind, check, and whether a running gateway
// can apply a change), which Default, Parse, Validate, Changes and
// Reloadable all walk. Each problem that Parse or Validate reports names
// its key as "section.key" (and, where there is one, the bad value; for a
// value of the wrong type, its line and what to write), so that an
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
	Notify   Notify
	Cluster  Cluster
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
	// mixed. Each must be a subnet as written, without host bits set
	// ("198.18.0.5/24" is refused, naming "198.18.0.0/24").
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
	// Insecure is [control] insecure: serve the API on an address other
	// than loopback without a token, on purpose. Without it (default
	// false) such a config is refused: anyone who reaches the address
	// could change the routing.
	Insecure bool
	// MaxConnections is [control] max_connections: the most connections
	// that the API serves at once; more wait in the kernel's backlog.
	// Default 64.
	MaxConnections int
	// TLSCert and TLSKey are [control] tls_cert and tls_key: optional,
	// together; PEM files of the API's certificate (with its chain) and
	// private key. Set, the API speaks HTTPS only. Both are read again on
	// every reload.
	TLSCert, TLSKey string
}

// State is the [state] section: where the registry's table survives a
// restart.
type State struct {
	// Path is [state] path: the state file; default
	// "/var/lib/vipmux/state.json".
	Path string
	// MaxBindings is [state] max_bindings: the most bindings the table
	// takes; default registry.DefaultMaxBindings.
	MaxBindings int
	// MaxMembersPerPort is [state] max_members_per_port: the most members
	// of one port binding; default registry.DefaultMaxMembersPerPort.
	MaxMembersPerPort int
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
	// HandshakeTimeout is [dispatch] handshake_timeout: how long a client
	// may take to complete its TCP handshake; default 5s, > 0 and <= 60s.
	HandshakeTimeout Duration
	// HandshakeFirstAbove is [dispatch] handshake_first_above: above this
	// many handshakes in flight the client's handshake is completed before
	// the backend is dialled; default 256, 0 (always)..65536.
	HandshakeFirstAbove int
	// MaxInFlightPerSource is [dispatch] max_in_flight_per_source: the
	// handshakes in flight from one source address (IPv6: /64); default 0,
	// a quarter of max_in_flight; 0..65536.
	MaxInFlightPerSource int
	// IdleTimeout is [dispatch] idle_timeout: a proxied connection with no
	// byte either way for that long is closed; default 1h, 0 disables,
	// at most 168h.
	IdleTimeout Duration
	// MaxConnections is [dispatch] max_connections: the proxied
	// connections open at once; over it a SYN gets RST; default 0 (no
	// cap), 0..16777216.
	MaxConnections int
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
	// Refresh is [arp] refresh: announce every held address again once
	// per this interval, spread over it; default 0 (off), else 1s..1h.
	Refresh Duration
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
	// PerMember is [metrics] per_member: which members get series of
	// their own: "all" (default), "mode2" (mode-1 members are summed) or
	// "none" (every member is summed).
	PerMember string
}

// Notify is the [notify] section: where the events that matter to an
// operator go (package notify). Reloadable.
type Notify struct {
	// Exec is [notify] exec: an absolute path of a command run for each
	// event, without a shell, with the event as JSON on stdin and as
	// VIPMUX_* environment variables. Empty: none.
	Exec string
	// Webhook is [notify] webhook: an http or https URL that each event
	// is POSTed to as JSON. Empty: none.
	Webhook string
	// Timeout is [notify] timeout: how long a command may run and a POST
	// may take before it counts as failed. Default 5s.
	Timeout Duration
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

// Limits and choices that only config enforces. The limits that another
// package enforces at run time are that package's constants, used in keys.
const (
	minMTU         = 576
	maxMTU         = 65535
	maxDialTimeout = 60 * time.Second
	maxTimeWait    = 60 * time.Second
	maxDelayedAck  = 500 * time.Millisecond
	maxInFlight    = 65536
	maxHandshake   = 60 * time.Second
	maxIdleTimeout = 168 * time.Hour
	maxConnections = 1 << 24
	maxIfNameLen   = 15 // IFNAMSIZ - 1
	// maxControlConnections bounds [control] max_connections: each
	// connection is a goroutine and a descriptor.
	maxControlConnections = 4096
)

var (
	drivers    = []string{"afpacket", "tap"}
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
	// perMember are the values of metrics.per_member (metrics.PerMember*).
	perMember = []string{"all", "mode2", "none"}
)

// Default returns a configuration with every default set. It leaves the
// keys without a default empty (nic.driver, nic.interface, nic.networks),
// so it does not pass Validate on its own.
func Default() *Config {
	c := &Config{}
	for _, k := range keys {
		k.setDefault(c)
	}
	return c
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

// Parse decodes data strictly (an unknown key is an error), fills in the
// defaults for the keys that it leaves out and validates the result. The
// error lists every problem found, one *KeyError per line, each naming its
// key, and the line of the file for a value that is not what the key
// takes. Only a TOML syntax error, after which the file cannot be read
// further, comes alone (with its line and column).
func Parse(data []byte) (*Config, error) {
	file, err := readTOML(data)
	if err != nil {
		return nil, err
	}
	// bad holds the keys and tables that failed to parse, so that
	// validate does not pile its own complaints about the same (default)
	// values on top.
	bad := map[string]bool{}
	var errs []error
	for _, e := range file.unknownKeys(nil) {
		bad[e.Key] = true
		errs = append(errs, e)
	}
	report := func(name string, line int, err error) {
		for _, e := range keyErrors(name, err) {
			e.Line = line
			bad[name], bad[e.Key] = true, true
			errs = append(errs, e)
		}
	}
	c := Default()
	for _, k := range keys {
		if n := file.lookup(k.keyName()); n != nil {
			report(k.keyName(), n.line, k.decode(c, n.value))
		}
	}
	c.parsePorts(file.lookup(portTable), report)
	errs = append(errs, c.validate(bad)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// parsePorts fills c.Health.Port from the [health.port.PORT] tables of the
// file, after the [health] keys, whose values a port inherits for the keys
// it leaves out.
func (c *Config) parsePorts(ports *node, report func(name string, line int, err error)) {
	if ports == nil || ports.keys == nil {
		return
	}
	for _, name := range ports.sortedKeys() {
		n, key := ports.keys[name], portTable+"."+name
		if n.keys == nil {
			continue // not a table: unknownKeys reports it
		}
		port, err := strconv.ParseUint(name, 10, 16)
		if err != nil || port == 0 {
			report(key, n.line, fmt.Errorf("%q is not a port number 1..65535", name))
			continue
		}
		var p HealthPort
		for _, k := range portKeys() {
			k.inherit(&p, c)
			if v := n.keys[lastName(k.keyName())]; v != nil {
				report(key+"."+lastName(k.keyName()), v.line, k.decodePort(&p, v.value))
			}
		}
		if c.Health.Port == nil {
			c.Health.Port = map[uint16]HealthPort{}
		}
		c.Health.Port[uint16(port)] = p
	}
}

// Validate checks every key and returns all the problems found, joined with
// errors.Join, each a *KeyError naming its key as "section.key"; nil if
// there are none.
func (c *Config) Validate() error {
	return errors.Join(c.validate(nil)...)
}

// validate returns one error per problem, in the order of keys, skipping
// the keys in skip (which the caller has already reported) and the checks
// that read one of them.
func (c *Config) validate(skip map[string]bool) []error {
	var errs []error
	add := func(name string, err error) {
		for _, e := range keyErrors(name, err) {
			if !skip[e.Key] {
				errs = append(errs, e)
			}
		}
	}
	for _, k := range keys {
		if skipTable(k.keyName(), skip) || slices.ContainsFunc(k.dependsOn(), func(d string) bool { return skip[d] || skipTable(d, skip) }) {
			continue
		}
		add(k.keyName(), k.validate(c))
	}
	for _, port := range slices.Sorted(maps.Keys(c.Health.Port)) {
		p, key := c.Health.Port[port], fmt.Sprintf("%s.%d", portTable, port)
		if port == 0 {
			add(key, errors.New("0 is not a port number 1..65535"))
			continue
		}
		for _, k := range portKeys() {
			add(key+"."+lastName(k.keyName()), k.checkPort(c, &p))
		}
	}
	return errs
}

// skipTable reports whether a table that holds the key name is in skip:
// one that is not a table in the file.
func skipTable(name string, skip map[string]bool) bool {
	for i := range len(name) {
		if name[i] == '.' && skip[name[:i]] {
			return true
		}
	}
	return false
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

// checkNetworks checks nic.networks: at least one front subnet, each one
// valid, none overlapping an earlier one.
func checkNetworks(ps prefixes) error {
	if len(ps) == 0 {
		return errors.New("required: at least one front subnet such as \"198.18.0.0/24\"")
	}
	var errs elemErrors
	for i, p := range ps {
		if err := checkNetwork(p); err != nil {
			errs = append(errs, elemError{i, err})
		}
		for j, q := range ps[:i] {
			if p.IsValid() && q.IsValid() && p.Overlaps(q) {
				errs = append(errs, elemError{i, fmt.Errorf("%s overlaps nic.networks[%d] %s", p, j, q)})
				break
			}
		}
	}
	if errs == nil {
		return nil
	}
	return errs
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
// checkExposed refuses a control API that listens beyond loopback
// without a token, unless c says insecure on purpose.
func (c *Config) checkExposed(listen string) error {
	if c.Control.TokenFile != "" || c.Control.Insecure || loopbackListen(listen) {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address and no token is configured: anyone who reaches it could change the routing; set [control] token_file (a file holding the API token), or insecure = true to serve the API there without authentication on purpose", listen)
}

// loopbackListen reports whether the host of listen (host:port) is a
// loopback address, or "localhost". A host name, or no host (every
// interface), is not.
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

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
