package config

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"

	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/stack"
)

// parseErrors returns Parse's problems, one string per *KeyError (or the
// one error that is not a join of them).
func parseErrors(t *testing.T, in string) []string {
	t.Helper()
	c, err := Parse([]byte(in))
	if err == nil {
		t.Fatalf("Parse() = %+v, nil; want errors", c)
	}
	if c != nil {
		t.Errorf("Parse() returned a config with error %v", err)
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range j.Unwrap() {
		var ke *KeyError
		if !errors.As(e, &ke) {
			t.Errorf("Parse() problem %q is a %T, want a *KeyError", e, e)
		}
		out = append(out, e.Error())
	}
	return out
}

// TestParseTypeErrors checks that a value of the wrong TOML type names its
// key, its line, and what to write, for every kind of key, and that it is
// the only complaint about that key.
func TestParseTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "duration given as an integer (the issue's example)",
			in:   minimal + "[health]\nenabled = true\ninterval = \"1s\"\ntimeout = 100\n",
			want: []string{`health.timeout: line 9: want a duration string such as "100ms"`},
		},
		{
			name: "string given as an integer",
			in:   minimal + "[log]\nlevel = 3\n",
			want: []string{`log.level: line 7: want a string such as "info"`},
		},
		{
			name: "required string given as a boolean",
			in:   "[nic]\ndriver = true\ninterface = \"eth1\"\nnetworks = [\"198.18.0.0/24\"]\n",
			want: []string{`nic.driver: line 2: want a string such as "afpacket"`},
		},
		{
			name: "integer given as a string",
			in:   minimal + "[dispatch]\nmax_in_flight = \"8\"\n",
			want: []string{`dispatch.max_in_flight: line 7: want an integer such as 8192`},
		},
		{
			name: "integer given as a float",
			in:   minimal + "[arp]\ngarp_count = 3.0\n",
			want: []string{`arp.garp_count: line 7: want an integer such as 3`},
		},
		{
			name: "boolean given as a string",
			in:   minimal + "offload = \"yes\"\n",
			want: []string{`nic.offload: line 6: want a boolean (true or false) such as true`},
		},
		{
			name: "address given as a date",
			in:   minimal + "router = 1979-05-27\n",
			want: []string{`nic.router: line 6: want an IP address string such as "198.18.0.1"`},
		},
		{
			name: "MAC given as an integer",
			in:   minimal + "mac = 5\n",
			want: []string{`nic.mac: line 6: want a MAC address string such as "02:00:5e:00:53:01"`},
		},
		{
			name: "list given as a string",
			in:   "[nic]\ndriver = \"tap\"\ninterface = \"t0\"\nnetworks = \"198.18.0.0/24\"\nrouter = \"198.18.0.1\"\n",
			want: []string{`nic.networks: line 4: want a list of CIDR prefix strings such as ["198.18.0.0/24"]`},
		},
		{
			name: "list element of the wrong type",
			in:   "[nic]\ndriver = \"tap\"\ninterface = \"t0\"\nnetworks = [\"198.18.0.0/24\", 24]\n",
			want: []string{`nic.networks[1]: line 4: want a CIDR prefix string such as "198.18.0.0/24"`},
		},
		{
			name: "per-port key",
			in:   minimal + "[health.port.8080]\ninterval = 5\n",
			want: []string{`health.port.8080.interval: line 7: want a duration string such as "100ms"`},
		},
		{
			name: "per-port key in an inline table",
			in:   minimal + "[health]\nport.8080 = { fall = \"3\" }\n",
			want: []string{`health.port.8080.fall: line 7: want an integer such as 2`},
		},
		{
			name: "section that is not a table, and a key that reads it",
			in:   "nic = 5\n[shared]\naddress = \"198.18.0.100\"\n",
			want: []string{`nic: line 1: want a table: [nic] on a line of its own, then its keys`},
		},
		{
			name: "port table that is not a table",
			in:   minimal + "[health]\nport.8080 = 5\n",
			want: []string{`health.port.8080: line 7: want a table: [health.port.8080] on a line of its own, then its keys`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, parseErrors(t, tc.in)); diff != "" {
				t.Errorf("Parse(%q) problems (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestParseEveryProblemAtOnce checks that type errors do not hide each
// other, nor the unknown keys and the values out of range in the same
// file: every problem is listed, each with its key.
func TestParseEveryProblemAtOnce(t *testing.T) {
	in := `[nic]
driver = "afpacket"
interface = "eth1"
networks = ["198.18.0.5/24"]
mtu = "9000"
offload = 1
[dispatch]
dial_timeout = 3
max_in_flight = 0
[health]
timeout = 100
rise = "2"
[health.port.8080]
fall = "x"
[arp]
garp_count = 101
garp = 3
[log]
level = "loud"
`
	want := []string{
		"arp.garp: line 17: unknown key: [arp] takes garp_count, garp_interval, dad_probes, dad_interval, refresh",
		"nic.mtu: line 5: want an integer such as 1500",
		"nic.offload: line 6: want a boolean (true or false) such as true",
		`dispatch.dial_timeout: line 8: want a duration string such as "3s"`,
		`health.timeout: line 11: want a duration string such as "100ms"`,
		"health.rise: line 12: want an integer such as 2",
		"health.port.8080.fall: line 14: want an integer such as 2",
		"nic.networks[0]: 198.18.0.5/24 has host bits set: use 198.18.0.0/24",
		"dispatch.max_in_flight: 0 is out of range: use 1..65536",
		"arp.garp_count: 101 is out of range: use 0 (none)..100",
		`log.level: "loud" is not one of "debug", "info", "warn", "error"`,
	}
	if diff := cmp.Diff(want, parseErrors(t, in)); diff != "" {
		t.Errorf("Parse() problems (-want +got):\n%s", diff)
	}
}

// TestParseHostBits checks that a front subnet with host bits set is
// refused naming the key and the subnet to write, not silently masked.
func TestParseHostBits(t *testing.T) {
	tests := []struct {
		name     string
		networks string
		want     []string // nil: accepted
	}{
		{name: "IPv4", networks: `["198.18.0.5/24"]`, want: []string{"nic.networks[0]: 198.18.0.5/24 has host bits set: use 198.18.0.0/24"}},
		{name: "IPv6", networks: `["2001:db8:18::5/64"]`, want: []string{"nic.networks[0]: 2001:db8:18::5/64 has host bits set: use 2001:db8:18::/64"}},
		{name: "second of two", networks: `["198.18.0.0/24", "198.19.0.1/16"]`, want: []string{"nic.networks[1]: 198.19.0.1/16 has host bits set: use 198.19.0.0/16"}},
		{name: "a host route is a subnet", networks: `["198.18.0.5/32"]`},
		{name: "network address", networks: `["198.18.0.0/24"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := "[nic]\ndriver = \"tap\"\ninterface = \"t0\"\nnetworks = " + tc.networks + "\n"
			if tc.want == nil {
				c, err := Parse([]byte(in))
				if err != nil {
					t.Fatalf("Parse(networks = %s) = %v, want no error", tc.networks, err)
				}
				var want []netip.Prefix
				for _, s := range decodeLiteral(t, tc.networks).([]any) {
					want = append(want, netip.MustParsePrefix(s.(string)))
				}
				if diff := cmp.Diff(want, c.NIC.Networks, cmpOpts); diff != "" {
					t.Errorf("Parse(networks = %s) stored (-want +got):\n%s", tc.networks, diff)
				}
				return
			}
			if diff := cmp.Diff(tc.want, parseErrors(t, in)); diff != "" {
				t.Errorf("Parse(networks = %s) problems (-want +got):\n%s", tc.networks, diff)
			}
		})
	}
}

// exampleKeys returns the example file with every optional key
// uncommented (as TestExampleFile does), read as the parser reads it.
func exampleKeys(t *testing.T) *node {
	t.Helper()
	n, err := readTOML(uncommentedExample(t, "../config.example.toml"))
	if err != nil {
		t.Fatalf("read config.example.toml with every key uncommented: %v", err)
	}
	return n
}

// decodeLiteral decodes `v = LITERAL` as the TOML decoder returns v.
func decodeLiteral(t *testing.T, literal string) any {
	t.Helper()
	var m map[string]any
	if _, err := toml.Decode("v = "+literal, &m); err != nil {
		t.Fatalf("toml.Decode(v = %s): %v", literal, err)
	}
	return m["v"]
}

// TestKeys checks every entry of the table: a well-formed unique name, a
// default (or an example where the key has none) that decodes and
// round-trips through the file's syntax, documentation in
// config.example.toml with the default shown, and that Reloadable agrees.
func TestKeys(t *testing.T) {
	example := exampleKeys(t)
	seen := map[string]bool{}
	for _, k := range keys {
		name := k.keyName()
		t.Run(name, func(t *testing.T) {
			if seen[name] {
				t.Errorf("key %s is in the table twice", name)
			}
			seen[name] = true
			if parts := strings.Split(name, "."); len(parts) != 2 || parts[0] == "" || parts[1] == "" {
				t.Errorf("key %q is not section.key", name)
			}

			// The literal (the default, or the example of a key without
			// one) decodes, and formats back as written.
			lit := k.literal()
			if lit == "none" || lit == "" {
				t.Fatalf("key %s has neither a default nor an example", name)
			}
			c := Default()
			if err := k.decode(c, decodeLiteral(t, lit)); err != nil {
				t.Fatalf("decode(%s) error: %v", lit, err)
			}
			if got := k.format(c); got != lit {
				t.Errorf("format(decode(%s)) = %s, want it back as written", lit, got)
			}
			if k.perPort() {
				var p HealthPort
				if err := k.decodePort(&p, decodeLiteral(t, lit)); err != nil {
					t.Fatalf("decodePort(%s) error: %v", lit, err)
				}
				if got := k.formatPort(&p); got != lit {
					t.Errorf("formatPort(decodePort(%s)) = %s, want it back", lit, got)
				}
			}

			// config.example.toml documents it; an optional key shows its
			// default.
			n := example.lookup(name)
			if n == nil {
				t.Fatalf("config.example.toml does not document %s", name)
			}
			got := Default()
			if err := k.decode(got, n.value); err != nil {
				t.Fatalf("config.example.toml's %s (line %d): %v", name, n.line, err)
			}
			if def := k.format(Default()); def != "none" && k.literal() == def && k.format(got) != def {
				t.Errorf("config.example.toml shows %s = %s (line %d), but the default is %s", name, k.format(got), n.line, def)
			}
			if k.perPort() && example.lookup(portTable+".8080."+lastName(name)) == nil {
				t.Logf("config.example.toml's [health.port] example leaves out %s", lastName(name))
			}

			if got := Reloadable(name); got != k.isReloadable() {
				t.Errorf("Reloadable(%q) = %v, want %v (the table's)", name, got, k.isReloadable())
			}
		})
	}
}

// otherValues are values of every TOML type that keys take; each key takes
// at least one that differs from its default.
var otherValues = []string{`"198.18.0.7"`, `7`, `true`, `false`, `"7s"`, `"02:00:00:00:00:07"`, `["198.18.7.0/24"]`, `"other"`}

// TestChangesEveryKey checks that diff and Changes are driven by the
// table: a change of any key is reported under its name, as a change when
// the key is reloadable and as ErrNotReloadable naming it otherwise.
func TestChangesEveryKey(t *testing.T) {
	for _, k := range keys {
		t.Run(k.keyName(), func(t *testing.T) {
			old, next := withDefaults(nil), withDefaults(nil)
			for _, v := range otherValues {
				if k.decode(next, decodeLiteral(t, v)) == nil && !k.equal(old, next) {
					break
				}
			}
			if k.equal(old, next) {
				t.Fatalf("no value in %v changes %s", otherValues, k.keyName())
			}
			d := diff(old, next)
			want := []Change{{Key: k.keyName(), Old: k.show(old), New: k.show(next)}}
			if diff := cmp.Diff(want, d); diff != "" {
				t.Fatalf("diff() (-want +got):\n%s", diff)
			}
			changed, err := old.Changes(next)
			if k.isReloadable() {
				if err != nil || !slices.Equal(changed, want) {
					t.Errorf("Changes() = %v, %v; want %v, nil", changed, err, want)
				}
				return
			}
			var ke *KeyError
			if !errors.Is(err, ErrNotReloadable) || !errors.As(err, &ke) || ke.Key != k.keyName() || changed != nil {
				t.Errorf("Changes() = %v, %v; want ErrNotReloadable naming %s", changed, err, k.keyName())
			}
		})
	}
}

// TestHealthLimitsAgree checks that config accepts a [health] value
// exactly when the health package does: the limits are health's.
func TestHealthLimitsAgree(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Health)
		wantOK bool
	}{
		{"interval MinInterval", func(h *Health) { h.Interval = Duration{health.MinInterval} }, true},
		{"interval below MinInterval", func(h *Health) { h.Interval = Duration{health.MinInterval - 1} }, false},
		{"interval MaxInterval", func(h *Health) { h.Interval = Duration{health.MaxInterval} }, true},
		{"interval above MaxInterval", func(h *Health) { h.Interval = Duration{health.MaxInterval + 1} }, false},
		{"timeout MinTimeout", func(h *Health) { h.Timeout = Duration{health.MinTimeout} }, true},
		{"timeout below MinTimeout", func(h *Health) { h.Timeout = Duration{health.MinTimeout - 1} }, false},
		{"timeout MaxTimeout", func(h *Health) { h.Timeout = Duration{health.MaxTimeout} }, true},
		{"timeout above MaxTimeout", func(h *Health) { h.Timeout = Duration{health.MaxTimeout + 1} }, false},
		{"rise 1", func(h *Health) { h.Rise = 1 }, true},
		{"rise MaxCount", func(h *Health) { h.Rise = health.MaxCount }, true},
		{"rise above MaxCount", func(h *Health) { h.Rise = health.MaxCount + 1 }, false},
		{"fall MaxCount", func(h *Health) { h.Fall = health.MaxCount }, true},
		{"fall above MaxCount", func(h *Health) { h.Fall = health.MaxCount + 1 }, false},
		{"fall negative", func(h *Health) { h.Fall = -1 }, false},
		{"port interval above MaxInterval", func(h *Health) {
			h.Port = map[uint16]HealthPort{80: {Interval: Duration{health.MaxInterval + 1}, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := withDefaults(func(c *Config) { tc.edit(&c.Health) })
			cfgErr := c.Validate()
			settings := func(i, to Duration, r, f int) health.Settings {
				return health.Settings{Interval: i.Duration, Timeout: to.Duration, Rise: r, Fall: f}
			}
			h := c.Health
			ports := map[uint16]health.Settings{}
			for p, s := range h.Port {
				ports[p] = settings(s.Interval, s.Timeout, s.Rise, s.Fall)
			}
			healthErr := health.Check(settings(h.Interval, h.Timeout, h.Rise, h.Fall), ports)
			if (cfgErr == nil) != tc.wantOK || (healthErr == nil) != tc.wantOK {
				t.Errorf("config Validate() = %v, health.Check() = %v; want both to accept: %v", cfgErr, healthErr, tc.wantOK)
			}
		})
	}
}

// TestARPLimitsAgree checks that config accepts an [arp] section exactly
// when a running stack's SetARP does: the limits are the stack's.
func TestARPLimitsAgree(t *testing.T) {
	st, err := stack.New(stack.Options{
		Link:     ethernet.New(channel.New(16, 1500, "\x02\x00\x00\x00\x00\x01")),
		Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	tests := []struct {
		name   string
		edit   func(*ARP)
		wantOK bool
	}{
		{"defaults", func(*ARP) {}, true},
		{"garp_count 0", func(a *ARP) { a.GARPCount = 0 }, true},
		{"garp_count MaxGARPCount", func(a *ARP) { a.GARPCount = stack.MaxGARPCount }, true},
		{"garp_count above MaxGARPCount", func(a *ARP) { a.GARPCount = stack.MaxGARPCount + 1 }, false},
		{"garp_count negative", func(a *ARP) { a.GARPCount = -1 }, false},
		{"dad_probes 0", func(a *ARP) { a.DADProbes = 0 }, true},
		{"dad_probes MaxDADProbes", func(a *ARP) { a.DADProbes = stack.MaxDADProbes }, true},
		{"dad_probes above MaxDADProbes", func(a *ARP) { a.DADProbes = stack.MaxDADProbes + 1 }, false},
		{"garp_interval MinARPInterval", func(a *ARP) { a.GARPInterval = Duration{stack.MinARPInterval} }, true},
		{"garp_interval below MinARPInterval", func(a *ARP) { a.GARPInterval = Duration{stack.MinARPInterval - 1} }, false},
		{"garp_interval MaxARPInterval", func(a *ARP) { a.GARPInterval = Duration{stack.MaxARPInterval} }, true},
		{"garp_interval above MaxARPInterval", func(a *ARP) { a.GARPInterval = Duration{stack.MaxARPInterval + 1} }, false},
		{"dad_interval MinARPInterval", func(a *ARP) { a.DADInterval = Duration{stack.MinARPInterval} }, true},
		{"dad_interval below MinARPInterval", func(a *ARP) { a.DADInterval = Duration{stack.MinARPInterval - 1} }, false},
		{"dad_interval MaxARPInterval", func(a *ARP) { a.DADInterval = Duration{stack.MaxARPInterval} }, true},
		{"dad_interval above MaxARPInterval", func(a *ARP) { a.DADInterval = Duration{stack.MaxARPInterval + time.Millisecond} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := withDefaults(func(c *Config) { tc.edit(&c.ARP) })
			cfgErr := c.Validate()
			stackErr := st.SetARP(stack.ARPSettings{
				GARPCount: c.ARP.GARPCount, GARPInterval: c.ARP.GARPInterval.Duration,
				DADProbes: c.ARP.DADProbes, DADInterval: c.ARP.DADInterval.Duration,
			})
			if (cfgErr == nil) != tc.wantOK || (stackErr == nil) != tc.wantOK {
				t.Errorf("config Validate() = %v, stack SetARP() = %v; want both to accept: %v", cfgErr, stackErr, tc.wantOK)
			}
		})
	}
}
