package config

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// minimal is the smallest file that Parse accepts.
const minimal = `
[nic]
driver = "afpacket"
interface = "eth1"
networks = ["198.18.0.0/24"]
`

// withDefaults returns Default() with the minimal file's keys and fn's
// changes applied.
func withDefaults(fn func(*Config)) *Config {
	c := Default()
	c.NIC.Driver = "afpacket"
	c.NIC.Interface = "eth1"
	c.NIC.Networks = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	if fn != nil {
		fn(c)
	}
	return c
}

func TestDefault(t *testing.T) {
	want := &Config{
		NIC:     NIC{Offload: true},
		Control: Control{Listen: "127.0.0.1:7070", MaxConnections: 64},
		State:   State{Path: "/var/lib/vipmux/state.json", MaxBindings: 65536, MaxMembersPerPort: 256},
		Dispatch: Dispatch{DialTimeout: Duration{3 * time.Second}, MaxInFlight: 8192, TimeWait: Duration{10 * time.Millisecond}, DelayedAck: Duration{2 * time.Millisecond},
			HandshakeTimeout: Duration{5 * time.Second}, HandshakeFirstAbove: 256, IdleTimeout: Duration{time.Hour}},
		Health:  Health{Enabled: true, Interval: Duration{100 * time.Millisecond}, Timeout: Duration{100 * time.Millisecond}, Rise: 2, Fall: 2},
		ARP:     ARP{GARPCount: 3, GARPInterval: Duration{200 * time.Millisecond}, DADProbes: 2, DADInterval: Duration{100 * time.Millisecond}},
		Log:     Log{Level: "info", Format: "text"},
		Metrics: Metrics{PerMember: "all"},
		Notify:  Notify{Timeout: Duration{5 * time.Second}},
		Cluster: Cluster{Lease: Duration{3 * time.Second}, Placement: "spread", Priority: 100, OnEtcdLoss: "silent"},
	}
	if diff := cmp.Diff(want, Default(), cmpOpts); diff != "" {
		t.Errorf("Default() mismatch (-want +got):\n%s", diff)
	}
	if Default() == Default() {
		t.Errorf("Default() returned the same pointer twice; callers may modify it")
	}
}

// cmpOpts compares netip values, which have unexported fields, with ==.
var cmpOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Config
	}{
		{
			name: "minimal gets defaults",
			in:   minimal,
			want: withDefaults(nil),
		},
		{
			name: "every key",
			in: `
[nic]
driver = "tap"
interface = "vipmux0"
mac = "02:00:5e:00:53:01"
mtu = 9000
networks = ["198.18.0.0/24", "198.19.0.0/16"]
router = "198.18.0.1"
offload = false
[control]
listen = ":7171"
token_file = "/etc/vipmux/token"
[state]
path = "/tmp/state.json"
max_bindings = 1000
max_members_per_port = 16
[shared]
address = "198.18.0.100"
[dispatch]
dial_timeout = "500ms"
max_in_flight = 1
time_wait = "0s"
delayed_ack = "0s"
handshake_timeout = "2s"
handshake_first_above = 0
max_in_flight_per_source = 100
idle_timeout = "0s"
max_connections = 5000
[health]
enabled = false
interval = "1s"
timeout = "300ms"
rise = 3
fall = 4
failback = true
[health.port.8080]
interval = "50ms"
timeout = "20ms"
rise = 1
fall = 1
[arp]
garp_count = 5
garp_interval = "1s"
dad_probes = 3
dad_interval = "250ms"
[log]
level = "debug"
format = "json"
[metrics]
listen = "198.19.0.1:9100"
per_member = "mode2"

[cluster]
etcd = ["https://198.19.0.254:2379", "https://198.19.0.253:2379"]
node = "gw-a"
lease = "1s"
placement = "priority"
priority = 200
etcd_ca = "/etc/vipmux/ca.pem"
etcd_cert = "/etc/vipmux/c.pem"
etcd_key = "/etc/vipmux/k.pem"
on_etcd_loss = "keep"
`,
			want: &Config{
				NIC: NIC{
					Driver:    "tap",
					Interface: "vipmux0",
					MAC:       net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01},
					MTU:       9000,
					Networks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.19.0.0/16")},
					Router:    netip.MustParseAddr("198.18.0.1"),
				},
				Control: Control{Listen: ":7171", TokenFile: "/etc/vipmux/token", MaxConnections: 64},
				State:   State{Path: "/tmp/state.json", MaxBindings: 1000, MaxMembersPerPort: 16},
				Shared:  Shared{Address: netip.MustParseAddr("198.18.0.100")},
				Dispatch: Dispatch{DialTimeout: Duration{500 * time.Millisecond}, MaxInFlight: 1, TimeWait: Duration{0}, DelayedAck: Duration{0},
					HandshakeTimeout: Duration{2 * time.Second}, HandshakeFirstAbove: 0, MaxInFlightPerSource: 100, IdleTimeout: Duration{0}, MaxConnections: 5000},
				Health: Health{Interval: Duration{time.Second}, Timeout: Duration{300 * time.Millisecond}, Rise: 3, Fall: 4, Failback: true,
					Port: map[uint16]HealthPort{8080: {Interval: Duration{50 * time.Millisecond}, Timeout: Duration{20 * time.Millisecond}, Rise: 1, Fall: 1}}},
				ARP:     ARP{GARPCount: 5, GARPInterval: Duration{time.Second}, DADProbes: 3, DADInterval: Duration{250 * time.Millisecond}},
				Log:     Log{Level: "debug", Format: "json"},
				Metrics: Metrics{Listen: "198.19.0.1:9100", PerMember: "mode2"},
				Notify:  Notify{Timeout: Duration{5 * time.Second}},
				Cluster: Cluster{Etcd: []string{"https://198.19.0.254:2379", "https://198.19.0.253:2379"}, Node: "gw-a",
					Lease: Duration{time.Second}, Placement: "priority", Priority: 200,
					EtcdCA: "/etc/vipmux/ca.pem", EtcdCert: "/etc/vipmux/c.pem", EtcdKey: "/etc/vipmux/k.pem", OnEtcdLoss: "keep"},
			},
		},
		{
			name: "health ports inherit the keys they leave out",
			in: minimal + `
[health]
interval = "200ms"
fall = 3
port.80 = { fall = 1 }
[health.port.9090]
timeout = "1s"
rise = 5
`,
			want: withDefaults(func(c *Config) {
				c.Health.Interval = Duration{200 * time.Millisecond}
				c.Health.Fall = 3
				c.Health.Port = map[uint16]HealthPort{
					80:   {Interval: Duration{200 * time.Millisecond}, Timeout: Duration{100 * time.Millisecond}, Rise: 2, Fall: 1},
					9090: {Interval: Duration{200 * time.Millisecond}, Timeout: Duration{time.Second}, Rise: 5, Fall: 3},
				}
			}),
		},
		{
			name: "health limits are inclusive",
			in: minimal + `
[health]
interval = "10ms"
timeout = "1m"
rise = 100
fall = 1
[health.port.65535]
interval = "1h"
timeout = "1ms"
rise = 1
fall = 100
`,
			want: withDefaults(func(c *Config) {
				c.Health = Health{Enabled: true, Interval: Duration{10 * time.Millisecond}, Timeout: Duration{time.Minute}, Rise: 100, Fall: 1,
					Port: map[uint16]HealthPort{65535: {Interval: Duration{time.Hour}, Timeout: Duration{time.Millisecond}, Rise: 1, Fall: 100}}}
			}),
		},
		{
			name: "arp zero counts disable, limits are inclusive",
			in: minimal + `
[arp]
garp_count = 0
garp_interval = "10s"
dad_probes = 0
dad_interval = "10ms"
`,
			want: withDefaults(func(c *Config) {
				c.ARP = ARP{GARPCount: 0, GARPInterval: Duration{10 * time.Second}, DADProbes: 0, DADInterval: Duration{10 * time.Millisecond}}
			}),
		},
		{
			name: "arp upper limits",
			in: minimal + `
[arp]
garp_count = 100
dad_probes = 20
`,
			want: withDefaults(func(c *Config) {
				c.ARP.GARPCount = 100
				c.ARP.DADProbes = 20
			}),
		},
		{
			name: "limits are inclusive",
			in: minimal + `
mtu = 576
[dispatch]
dial_timeout = "60s"
max_in_flight = 65536
time_wait = "1m"
delayed_ack = "500ms"
handshake_timeout = "60s"
handshake_first_above = 65536
max_in_flight_per_source = 65536
idle_timeout = "168h"
max_connections = 16777216
`,
			want: withDefaults(func(c *Config) {
				c.NIC.MTU = 576
				c.Dispatch = Dispatch{DialTimeout: Duration{time.Minute}, MaxInFlight: 65536, TimeWait: Duration{time.Minute}, DelayedAck: Duration{500 * time.Millisecond},
					HandshakeTimeout: Duration{time.Minute}, HandshakeFirstAbove: 65536, MaxInFlightPerSource: 65536, IdleTimeout: Duration{168 * time.Hour}, MaxConnections: 1 << 24}
			}),
		},
		{
			name: "router and shared in a /31",
			in: `
[nic]
driver = "afpacket"
interface = "eth1"
networks = ["198.18.0.0/31"]
router = "198.18.0.0"
[shared]
address = "198.18.0.1"
`,
			want: withDefaults(func(c *Config) {
				c.NIC.Networks = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/31")}
				c.NIC.Router = netip.MustParseAddr("198.18.0.0")
				c.Shared.Address = netip.MustParseAddr("198.18.0.1")
			}),
		},
		{
			name: "shared in the second network",
			in: `
[nic]
driver = "afpacket"
interface = "eth1"
networks = ["198.18.0.0/24", "198.18.1.0/24"]
[shared]
address = "198.18.1.10"
`,
			want: withDefaults(func(c *Config) {
				c.NIC.Networks = append(c.NIC.Networks, netip.MustParsePrefix("198.18.1.0/24"))
				c.Shared.Address = netip.MustParseAddr("198.18.1.10")
			}),
		},
		{
			name: "IPv6 and IPv4 networks, IPv6 shared and router",
			in: `
[nic]
driver = "afpacket"
interface = "eth1"
networks = ["198.18.0.0/24", "2001:db8:18::/64"]
router = "2001:db8:18::1"
[shared]
address = "2001:db8:18::100"
`,
			want: withDefaults(func(c *Config) {
				c.NIC.Networks = append(c.NIC.Networks, netip.MustParsePrefix("2001:db8:18::/64"))
				c.NIC.Router = netip.MustParseAddr("2001:db8:18::1")
				c.Shared.Address = netip.MustParseAddr("2001:db8:18::100")
			}),
		},
		{
			name: "IPv6 only, a /127",
			in: `
[nic]
driver = "afpacket"
interface = "eth1"
networks = ["fd00:18::/127"]
[shared]
address = "fd00:18::"
`,
			want: withDefaults(func(c *Config) {
				c.NIC.Networks = []netip.Prefix{netip.MustParsePrefix("fd00:18::/127")}
				c.Shared.Address = netip.MustParseAddr("fd00:18::")
			}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse() error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate() of Parse()'s result: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// wantErrs must each appear in the error message.
		wantErrs []string
		// wantLines is how many problems the error lists; 0 skips the check.
		wantLines int
	}{
		{
			name:      "empty file",
			in:        ``,
			wantErrs:  []string{"nic.driver: required", "nic.interface: required", "nic.networks: required"},
			wantLines: 3,
		},
		{
			name:      "unknown key",
			in:        strings.Replace(minimal, "interface", "interfce", 1),
			wantErrs:  []string{"nic.interfce: line 4: unknown key: [nic] takes driver, interface, mac, mtu, networks, router, offload", "nic.interface: required"},
			wantLines: 2,
		},
		{
			name: "health keys that do not parse",
			in: minimal + `
[health]
interval = "fast"
rise = 0
[health.port.http]
fall = 1
[health.port.8080]
timeout = "soon"
fall = 0
retries = 3
`,
			wantErrs: []string{
				`health.interval: line 8: "fast" is not a duration: want a duration string such as "100ms"`, "health.rise: 0 is out of range",
				`health.port.http: line 10: "http" is not a port number`,
				`health.port.8080.timeout: line 13: "soon" is not a duration`, "health.port.8080.fall: 0 is out of range",
				"health.port.8080.retries: line 15: unknown key: [health.port.8080] takes interval, timeout, rise, fall",
			},
			wantLines: 6,
		},
		{
			name:      "unknown table reported once",
			in:        minimal + "[nics]\ndriver = \"tap\"\nmtu = 1\n",
			wantErrs:  []string{"nics: line 6: unknown key: the file takes the tables [nic], [control],"},
			wantLines: 1,
		},
		{
			name:      "unknown top-level key",
			in:        "debug = true\n" + minimal,
			wantErrs:  []string{"debug: line 1: unknown key"},
			wantLines: 1,
		},
		{
			name:     "syntax error keeps line and column",
			in:       "[nic]\ndriver = \"afpacket\"\ninterface = eth1\n",
			wantErrs: []string{"line 3, column 13"},
		},
		{
			name:      "type mismatch names key, line and what to write",
			in:        minimal + "mtu = \"1500\"\n",
			wantErrs:  []string{"nic.mtu: line 6: want an integer such as 1500"},
			wantLines: 1,
		},
		{
			name:      "bad driver",
			in:        strings.Replace(minimal, `"afpacket"`, `"pcap"`, 1),
			wantErrs:  []string{`nic.driver: "pcap" is not one of "afpacket", "tap"`},
			wantLines: 1,
		},
		{
			name:      "interface too long",
			in:        strings.Replace(minimal, `"eth1"`, `"abcdefghijklmnop"`, 1),
			wantErrs:  []string{`nic.interface: "abcdefghijklmnop" is longer than 15 bytes`},
			wantLines: 1,
		},
		{
			name:     "interface with slash",
			in:       strings.Replace(minimal, `"eth1"`, `"eth/1"`, 1),
			wantErrs: []string{`nic.interface: "eth/1"`},
		},
		{
			name:     "interface with space",
			in:       strings.Replace(minimal, `"eth1"`, `"eth 1"`, 1),
			wantErrs: []string{`nic.interface: "eth 1"`},
		},
		{
			name:     "interface dot dot",
			in:       strings.Replace(minimal, `"eth1"`, `".."`, 1),
			wantErrs: []string{`nic.interface: ".." is not an interface name`},
		},
		{
			name:      "mac not a mac",
			in:        minimal + `mac = "02:00:5e:00:53"` + "\n",
			wantErrs:  []string{`nic.mac: line 6: "02:00:5e:00:53" is not a MAC address: want a MAC address string such as "02:00:5e:00:53:01"`},
			wantLines: 1,
		},
		{
			name:     "mac multicast",
			in:       minimal + `mac = "01:00:5e:00:53:01"` + "\n",
			wantErrs: []string{`nic.mac: 01:00:5e:00:53:01 is a multicast address`},
		},
		{
			name:     "mac 8 bytes",
			in:       minimal + `mac = "02:00:5e:10:00:00:00:01"` + "\n",
			wantErrs: []string{`nic.mac: "02:00:5e:10:00:00:00:01" is not a 6-byte`},
		},
		{
			name:     "mac all zero",
			in:       minimal + `mac = "00:00:00:00:00:00"` + "\n",
			wantErrs: []string{`nic.mac: 00:00:00:00:00:00 is the all-zero address`},
		},
		{
			name:      "mtu too small",
			in:        minimal + "mtu = 575\n",
			wantErrs:  []string{"nic.mtu: 575 is out of range"},
			wantLines: 1,
		},
		{
			name:     "mtu too large",
			in:       minimal + "mtu = 65536\n",
			wantErrs: []string{"nic.mtu: 65536 is out of range"},
		},
		{
			name:     "mtu negative",
			in:       minimal + "mtu = -1\n",
			wantErrs: []string{"nic.mtu: -1 is out of range"},
		},
		{
			name:      "networks empty list",
			in:        strings.Replace(minimal, `["198.18.0.0/24"]`, `[]`, 1),
			wantErrs:  []string{"nic.networks: required"},
			wantLines: 1,
		},
		{
			name:      "bad CIDR names index and value",
			in:        strings.Replace(minimal, `["198.18.0.0/24"]`, `["198.18.0.0/24", "198.18.0.0/33"]`, 1),
			wantErrs:  []string{`nic.networks[1]: line 5: "198.18.0.0/33" is not a CIDR prefix: want a CIDR prefix string such as "198.18.0.0/24"`},
			wantLines: 1,
		},
		{
			name: "bad CIDR keeps later indices",
			in: strings.Replace(minimal, `["198.18.0.0/24"]`, `["198.18.0", "ff02::/16"]`, 1) +
				`router = "198.19.9.9"` + "\n",
			wantErrs: []string{
				`nic.networks[0]: line 5: "198.18.0" is not a CIDR prefix`,
				`nic.networks[1]: ff02::/16 is an IPv6 multicast prefix`,
			},
			// The router is not checked against networks that did not parse.
			wantLines: 2,
		},
		{
			name:     "overlapping networks",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["198.18.0.0/24", "198.18.0.128/25"]`, 1),
			wantErrs: []string{"nic.networks[1]: 198.18.0.128/25 overlaps nic.networks[0] 198.18.0.0/24"},
		},
		{
			name:     "network /0",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["0.0.0.0/0"]`, 1),
			wantErrs: []string{"nic.networks[0]: 0.0.0.0/0 covers every address"},
		},
		{
			name:      "router not an address",
			in:        minimal + `router = "198.18.0.256"` + "\n",
			wantErrs:  []string{`nic.router: line 6: "198.18.0.256" is not an IP address: want an IP address string such as "198.18.0.1"`},
			wantLines: 1,
		},
		{
			name:      "router outside networks",
			in:        minimal + `router = "198.19.0.1"` + "\n",
			wantErrs:  []string{"nic.router: 198.19.0.1 is outside nic.networks"},
			wantLines: 1,
		},
		{
			name:     "router is broadcast",
			in:       minimal + `router = "198.18.0.255"` + "\n",
			wantErrs: []string{"nic.router: 198.18.0.255 is the network or broadcast address"},
		},
		{
			name:     "router is network address",
			in:       minimal + `router = "198.18.0.0"` + "\n",
			wantErrs: []string{"nic.router: 198.18.0.0 is the network or broadcast address"},
		},
		{
			name:      "shared not an address",
			in:        minimal + "[shared]\naddress = \"shared\"\n",
			wantErrs:  []string{`shared.address: line 7: "shared" is not an IP address`},
			wantLines: 1,
		},
		{
			name:      "shared outside networks",
			in:        minimal + "[shared]\naddress = \"198.19.0.100\"\n",
			wantErrs:  []string{"shared.address: 198.19.0.100 is outside nic.networks"},
			wantLines: 1,
		},
		{
			name:     "shared is the router",
			in:       minimal + "router = \"198.18.0.1\"\n[shared]\naddress = \"198.18.0.1\"\n",
			wantErrs: []string{"shared.address: 198.18.0.1 is also nic.router"},
		},
		{
			name:      "shared IPv6 outside networks",
			in:        minimal + "[shared]\naddress = \"2001:db8::1\"\n",
			wantErrs:  []string{"shared.address: 2001:db8::1 is outside nic.networks [198.18.0.0/24]"},
			wantLines: 1,
		},
		{
			name:      "shared IPv6 in another IPv6 network",
			in:        strings.Replace(minimal, `["198.18.0.0/24"]`, `["198.18.0.0/24", "2001:db8:18::/64"]`, 1) + "[shared]\naddress = \"2001:db8:19::1\"\n",
			wantErrs:  []string{"shared.address: 2001:db8:19::1 is outside nic.networks [198.18.0.0/24 2001:db8:18::/64]"},
			wantLines: 1,
		},
		{
			name:     "shared IPv6 subnet-router anycast",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["2001:db8:18::/64"]`, 1) + "[shared]\naddress = \"2001:db8:18::\"\n",
			wantErrs: []string{"shared.address: 2001:db8:18:: is the subnet-router anycast address of 2001:db8:18::/64"},
		},
		{
			name:     "shared IPv6 with zone",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["2001:db8:18::/64"]`, 1) + "[shared]\naddress = \"2001:db8:18::5%eth0\"\n",
			wantErrs: []string{"shared.address: 2001:db8:18::5%eth0 has a zone"},
		},
		{
			name:     "shared IPv4-mapped",
			in:       minimal + "[shared]\naddress = \"::ffff:198.18.0.5\"\n",
			wantErrs: []string{"shared.address: ::ffff:198.18.0.5 is IPv4-mapped: write 198.18.0.5"},
		},
		{
			name:     "router IPv6 outside networks",
			in:       minimal + `router = "2001:db8::1"` + "\n",
			wantErrs: []string{"nic.router: 2001:db8::1 is outside nic.networks"},
		},
		{
			name:     "network IPv6 link-local",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["fe80::/64"]`, 1),
			wantErrs: []string{"nic.networks[0]: fe80::/64 is IPv6 link-local"},
		},
		{
			name:     "network IPv6 covering link-local",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["fe80::/9"]`, 1),
			wantErrs: []string{"nic.networks[0]: fe80::/9 is IPv6 link-local"},
		},
		{
			name:     "network IPv4-mapped",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["::ffff:198.18.0.0/120"]`, 1),
			wantErrs: []string{"nic.networks[0]: ::ffff:198.18.0.0/120 is an IPv4-mapped IPv6 prefix"},
		},
		{
			name:     "network IPv6 loopback",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["::1/128"]`, 1),
			wantErrs: []string{"nic.networks[0]: ::1/128 contains the loopback address ::1"},
		},
		{
			name:     "network IPv6 overlapping",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["2001:db8:18::/64", "2001:db8:18::/96"]`, 1),
			wantErrs: []string{"nic.networks[1]: 2001:db8:18::/96 overlaps nic.networks[0] 2001:db8:18::/64"},
		},
		{
			name:     "network IPv6 /0",
			in:       strings.Replace(minimal, `["198.18.0.0/24"]`, `["::/0"]`, 1),
			wantErrs: []string{"nic.networks[0]: ::/0"},
		},
		{
			name:     "listen without port",
			in:       minimal + "[control]\nlisten = \"127.0.0.1\"\n",
			wantErrs: []string{`control.listen: "127.0.0.1" is not host:port`},
		},
		{
			name:     "listen bad port",
			in:       minimal + "[control]\nlisten = \"127.0.0.1:http\"\n",
			wantErrs: []string{`control.listen: "127.0.0.1:http": port "http"`},
		},
		{
			name:     "listen empty",
			in:       minimal + "[control]\nlisten = \"\"\n",
			wantErrs: []string{"control.listen: required"},
		},
		{
			name:     "metrics listen without port",
			in:       minimal + "[metrics]\nlisten = \"127.0.0.1\"\n",
			wantErrs: []string{`metrics.listen: "127.0.0.1" is not host:port`},
		},
		{
			name:     "metrics listen is control listen",
			in:       minimal + "[metrics]\nlisten = \"127.0.0.1:7070\"\n",
			wantErrs: []string{`metrics.listen: "127.0.0.1:7070" is also control.listen`},
		},
		{
			name:     "metrics unknown key",
			in:       minimal + "[metrics]\npath = \"/metrics\"\n",
			wantErrs: []string{"metrics.path: line 7: unknown key: [metrics] takes listen"},
		},
		{
			name:     "token file blank",
			in:       minimal + "[control]\ntoken_file = \"  \"\n",
			wantErrs: []string{"control.token_file: is only whitespace"},
		},
		{
			name:     "state path empty",
			in:       minimal + "[state]\npath = \"\"\n",
			wantErrs: []string{"state.path: required"},
		},
		{
			name:      "dial timeout not a duration",
			in:        minimal + "[dispatch]\ndial_timeout = \"3\"\n",
			wantErrs:  []string{`dispatch.dial_timeout: line 7: "3" is not a duration: want a duration string such as "3s"`},
			wantLines: 1,
		},
		{
			name:      "dial timeout integer",
			in:        minimal + "[dispatch]\ndial_timeout = 3\n",
			wantErrs:  []string{`dispatch.dial_timeout: line 7: want a duration string such as "3s"`},
			wantLines: 1,
		},
		{
			name:     "dial timeout zero",
			in:       minimal + "[dispatch]\ndial_timeout = \"0s\"\n",
			wantErrs: []string{"dispatch.dial_timeout: 0s is out of range"},
		},
		{
			name:     "dial timeout too long",
			in:       minimal + "[dispatch]\ndial_timeout = \"61s\"\n",
			wantErrs: []string{"dispatch.dial_timeout: 1m1s is out of range"},
		},
		{
			name:     "max in flight zero",
			in:       minimal + "[dispatch]\nmax_in_flight = 0\n",
			wantErrs: []string{"dispatch.max_in_flight: 0 is out of range"},
		},
		{
			name:     "max in flight too many",
			in:       minimal + "[dispatch]\nmax_in_flight = 65537\n",
			wantErrs: []string{"dispatch.max_in_flight: 65537 is out of range"},
		},
		{
			name:      "time wait not a duration",
			in:        minimal + "[dispatch]\ntime_wait = \"soon\"\n",
			wantErrs:  []string{`dispatch.time_wait: line 7: "soon" is not a duration`},
			wantLines: 1,
		},
		{
			name:     "time wait negative",
			in:       minimal + "[dispatch]\ntime_wait = \"-1s\"\n",
			wantErrs: []string{"dispatch.time_wait: -1s is out of range"},
		},
		{
			name:     "time wait too long",
			in:       minimal + "[dispatch]\ntime_wait = \"2m\"\n",
			wantErrs: []string{"dispatch.time_wait: 2m0s is out of range"},
		},
		{
			name:      "delayed ack not a duration",
			in:        minimal + "[dispatch]\ndelayed_ack = \"2\"\n",
			wantErrs:  []string{`dispatch.delayed_ack: line 7: "2" is not a duration`},
			wantLines: 1,
		},
		{
			name:     "delayed ack negative",
			in:       minimal + "[dispatch]\ndelayed_ack = \"-1ms\"\n",
			wantErrs: []string{"dispatch.delayed_ack: -1ms is out of range"},
		},
		{
			name:     "delayed ack too long",
			in:       minimal + "[dispatch]\ndelayed_ack = \"501ms\"\n",
			wantErrs: []string{"dispatch.delayed_ack: 501ms is out of range"},
		},
		{
			name:     "connection path limits out of range",
			in:       minimal + "[dispatch]\nhandshake_timeout = \"61s\"\nhandshake_first_above = -1\nmax_in_flight_per_source = 65537\nidle_timeout = \"-1s\"\nmax_connections = -1\n",
			wantErrs: []string{"dispatch.handshake_timeout: 1m1s is out of range", "dispatch.handshake_first_above: -1 is out of range", "dispatch.max_in_flight_per_source: 65537 is out of range", "dispatch.idle_timeout: -1s is out of range", "dispatch.max_connections: -1 is out of range"},
		},
		{
			name:     "garp count negative",
			in:       minimal + "[arp]\ngarp_count = -1\n",
			wantErrs: []string{"arp.garp_count: -1 is out of range"},
		},
		{
			name:     "garp count too many",
			in:       minimal + "[arp]\ngarp_count = 101\n",
			wantErrs: []string{"arp.garp_count: 101 is out of range"},
		},
		{
			name:      "garp interval not a duration",
			in:        minimal + "[arp]\ngarp_interval = \"often\"\n",
			wantErrs:  []string{`arp.garp_interval: line 7: "often" is not a duration`},
			wantLines: 1,
		},
		{
			name:     "garp interval too short",
			in:       minimal + "[arp]\ngarp_interval = \"1ms\"\n",
			wantErrs: []string{"arp.garp_interval: 1ms is out of range"},
		},
		{
			name:     "dad probes too many",
			in:       minimal + "[arp]\ndad_probes = 21\n",
			wantErrs: []string{"arp.dad_probes: 21 is out of range"},
		},
		{
			name:      "dad interval not a duration",
			in:        minimal + "[arp]\ndad_interval = \"100\"\n",
			wantErrs:  []string{`arp.dad_interval: line 7: "100" is not a duration`},
			wantLines: 1,
		},
		{
			name:     "dad interval too long",
			in:       minimal + "[arp]\ndad_interval = \"11s\"\n",
			wantErrs: []string{"arp.dad_interval: 11s is out of range"},
		},
		{
			name:     "arp unknown key",
			in:       minimal + "[arp]\ngarp = 3\n",
			wantErrs: []string{"arp.garp: line 7: unknown key: [arp] takes garp_count, garp_interval, dad_probes, dad_interval"},
		},
		{
			name:     "log level",
			in:       minimal + "[log]\nlevel = \"trace\"\n",
			wantErrs: []string{`log.level: "trace" is not one of`},
		},
		{
			name:     "log format",
			in:       minimal + "[log]\nformat = \"logfmt\"\n",
			wantErrs: []string{`log.format: "logfmt" is not one of`},
		},
		{
			name:     "metrics per_member",
			in:       minimal + "[metrics]\nper_member = \"mode1\"\n",
			wantErrs: []string{`metrics.per_member: "mode1" is not one of "all", "mode2", "none"`},
		},
		{
			name: "every problem at once",
			in: `
[nic]
driver = "x"
interface = ""
mtu = 1
networks = ["198.18.0.0/24"]
router = "198.20.0.1"
[dispatch]
max_in_flight = -5
[log]
level = "loud"
`,
			wantErrs:  []string{"nic.driver", "nic.interface", "nic.mtu", "nic.router", "dispatch.max_in_flight", "log.level"},
			wantLines: 6,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse() = %+v, nil; want an error containing %q", got, tc.wantErrs)
			}
			if got != nil {
				t.Errorf("Parse() returned a config with error %v", err)
			}
			for _, want := range tc.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Parse() error = %q; want it to contain %q", err, want)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); tc.wantLines != 0 && n != tc.wantLines {
				t.Errorf("Parse() error has %d lines, want %d:\n%v", n, tc.wantLines, err)
			}
		})
	}
}

func TestParseSyntaxErrorUnwraps(t *testing.T) {
	_, err := Parse([]byte("[nic]\ndriver = = 1\n"))
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("Parse() error = %v (%T); want one that unwraps to toml.ParseError", err, err)
	}
	if pe.Position.Line != 2 {
		t.Errorf("ParseError line = %d, want 2", pe.Position.Line)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		modify   func(*Config)
		wantErrs []string
	}{
		{name: "valid", modify: func(*Config) {}},
		{
			name:     "Default alone",
			modify:   func(c *Config) { *c = *Default() },
			wantErrs: []string{"nic.driver: required", "nic.interface: required", "nic.networks: required"},
		},
		{
			name:     "invalid prefix",
			modify:   func(c *Config) { c.NIC.Networks = []netip.Prefix{{}} },
			wantErrs: []string{"nic.networks[0]: not a valid CIDR prefix"},
		},
		{
			name:     "unmasked prefix",
			modify:   func(c *Config) { c.NIC.Networks = []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")} },
			wantErrs: []string{"nic.networks[0]: 198.18.0.1/24 has host bits set: use 198.18.0.0/24"},
		},
		{
			name:     "mac 4 bytes",
			modify:   func(c *Config) { c.NIC.MAC = net.HardwareAddr{2, 0, 0, 1} },
			wantErrs: []string{"nic.mac:"},
		},
		{
			name:     "zero durations",
			modify:   func(c *Config) { c.Dispatch = Dispatch{MaxInFlight: 1} },
			wantErrs: []string{"dispatch.dial_timeout: 0s is out of range", "dispatch.handshake_timeout: 0s is out of range"},
		},
		{
			name: "health out of range",
			modify: func(c *Config) {
				c.Health = Health{Interval: Duration{time.Millisecond}, Timeout: Duration{0}, Rise: 0, Fall: 101,
					Port: map[uint16]HealthPort{0: {}, 80: {Interval: Duration{2 * time.Hour}, Timeout: Duration{2 * time.Minute}, Rise: -1, Fall: 0}}}
			},
			wantErrs: []string{
				"health.interval: 1ms is out of range", "health.timeout: 0s is out of range", "health.rise: 0 is out of range", "health.fall: 101 is out of range",
				"health.port.0: 0 is not a port number",
				"health.port.80.interval: 2h0m0s is out of range", "health.port.80.timeout: 2m0s", "health.port.80.rise: -1", "health.port.80.fall: 0",
			},
		},
		{
			name:     "interface with NUL",
			modify:   func(c *Config) { c.NIC.Interface = "eth\x001" },
			wantErrs: []string{"nic.interface:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := withDefaults(tc.modify)
			err := c.Validate()
			if len(tc.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors containing %q", tc.wantErrs)
			}
			for _, want := range tc.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q; want it to contain %q", err, want)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tc.wantErrs) {
				t.Errorf("Validate() has %d lines, want %d:\n%v", n, len(tc.wantErrs), err)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "seconds", in: "3s", want: 3 * time.Second},
		{name: "milliseconds", in: "250ms", want: 250 * time.Millisecond},
		{name: "compound", in: "1m30s", want: 90 * time.Second},
		{name: "zero", in: "0", want: 0},
		{name: "no unit", in: "3", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "junk", in: "soon", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("UnmarshalText(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if d.Duration != tc.want {
				t.Errorf("UnmarshalText(%q) = %v, want %v", tc.in, d.Duration, tc.want)
			}
			text, err := d.MarshalText()
			if err != nil {
				t.Fatalf("MarshalText() error: %v", err)
			}
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Errorf("round trip %q -> %q -> %v, %v; want %v", tc.in, text, back, err, d)
			}
		})
	}
}

// TestDurationTOML checks that Duration works through the TOML package
// itself, for callers that embed it in their own structs.
func TestDurationTOML(t *testing.T) {
	var v struct{ D Duration }
	if _, err := toml.Decode(`D = "1m"`, &v); err != nil {
		t.Fatalf("toml.Decode() error: %v", err)
	}
	if v.D.Duration != time.Minute {
		t.Errorf("toml.Decode() D = %v, want 1m", v.D)
	}
	var sb strings.Builder
	if err := toml.NewEncoder(&sb).Encode(v); err != nil {
		t.Fatalf("toml Encode() error: %v", err)
	}
	if want := `D = "1m0s"`; strings.TrimSpace(sb.String()) != want {
		t.Errorf("toml Encode() = %q, want %q", sb.String(), want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(minimal+"mtu = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.toml")

	tests := []struct {
		name     string
		path     string
		want     *Config
		wantErrs []string
	}{
		{name: "good", path: good, want: withDefaults(nil)},
		{name: "invalid names path and key", path: bad, wantErrs: []string{bad, "nic.mtu"}},
		{name: "missing names path", path: missing, wantErrs: []string{missing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Load(tc.path)
			if len(tc.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("Load(%q) = nil error, want one containing %q", tc.path, tc.wantErrs)
				}
				for _, want := range tc.wantErrs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Load(%q) error = %q; want it to contain %q", tc.path, err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%q) error: %v", tc.path, err)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
				t.Errorf("Load(%q) mismatch (-want +got):\n%s", tc.path, diff)
			}
		})
	}
	if _, err := Load(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v; want errors.Is(err, os.ErrNotExist)", err)
	}
}

func TestExampleFile(t *testing.T) {
	const path = "../config.example.toml"
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%q) error: %v", path, err)
	}
	if diff := cmp.Diff(withDefaults(nil), got, cmpOpts); diff != "" {
		t.Errorf("Load(%q) mismatch (-want +got):\n%s", path, diff)
	}

	// Uncommenting every optional key must still give a valid file, and
	// each must be a key that Parse knows (so the example documents every
	// key, with a value that passes).
	example := uncommentedExample(t, path)
	full, err := Parse(example)
	if err != nil {
		t.Fatalf("Parse(example with every key uncommented) error: %v", err)
	}
	// TestKeys checks that every key of the table is documented; here,
	// that the per-port example is a [health.port.PORT] table that Parse
	// takes.
	documented := documentedKeys(t, example)
	for _, want := range []string{"health.port.8080.interval", "health.port.8080.fall"} {
		if !documented[want] {
			t.Errorf("config.example.toml does not document %s", want)
		}
	}
	if p, ok := full.Health.Port[8080]; !ok || p.Interval.Duration != 50*time.Millisecond || p.Fall != 3 {
		t.Errorf("uncommented example's [health.port.8080] = %+v, want interval 50ms, fall 3", full.Health.Port)
	}
	if !full.Shared.Address.IsValid() || full.NIC.MAC == nil || !full.NIC.Router.IsValid() {
		t.Errorf("uncommented example = %+v; want mac, router and shared.address set", full)
	}
}

// documentedKeys returns every key that data sets, as "section.key".
func documentedKeys(t *testing.T, data []byte) map[string]bool {
	t.Helper()
	var v map[string]any
	md, err := toml.Decode(string(data), &v)
	if err != nil {
		t.Fatalf("toml.Decode() error: %v", err)
	}
	keys := map[string]bool{}
	for _, k := range md.Keys() {
		keys[k.String()] = true
	}
	return keys
}

// uncommentedExample returns the example config at path with every
// optional key ("# key = value") uncommented.
func uncommentedExample(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "# "); ok && strings.Contains(rest, " = ") && !strings.Contains(rest, "  ") {
			l = rest
		}
		lines = append(lines, l)
	}
	return []byte(strings.Join(lines, "\n"))
}
