package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestChanges(t *testing.T) {
	tests := []struct {
		name        string
		edit        func(*Config)
		wantChanged []string
		// wantKeys are the keys that the error names, in order; nil means
		// no error.
		wantKeys []string
	}{
		{name: "nothing", edit: func(*Config) {}},
		{
			name: "every reloadable section",
			edit: func(c *Config) {
				c.Shared.Address = netip.MustParseAddr("198.18.0.101")
				c.Dispatch.DialTimeout = Duration{time.Second}
				c.Dispatch.TimeWait = Duration{0}
				c.Dispatch.DelayedAck = Duration{0}
				c.Health.Enabled = false
				c.Health.Interval = Duration{time.Second}
				c.Health.Failback = true
				c.Health.Port = map[uint16]HealthPort{8080: {Interval: Duration{time.Second}, Timeout: Duration{time.Second}, Rise: 1, Fall: 1}}
				c.ARP.GARPCount = 0
				c.ARP.DADInterval = Duration{time.Second}
				c.Log.Level = "debug"
				c.Log.Format = "json"
			},
			wantChanged: []string{
				"arp.dad_interval", "arp.garp_count", "dispatch.delayed_ack", "dispatch.dial_timeout", "dispatch.time_wait",
				"health.enabled", "health.failback", "health.interval", "health.port.8080.fall", "health.port.8080.rise",
				"log.format", "log.level", "shared.address",
			},
		},
		{
			name: "a per-port health key",
			edit: func(c *Config) {
				c.Health.Port = map[uint16]HealthPort{8080: {Interval: Duration{time.Second}, Timeout: Duration{time.Second}, Rise: 2, Fall: 3}}
			},
			wantChanged: []string{"health.port.8080.fall"},
		},
		{
			name: "a new per-port table",
			edit: func(c *Config) {
				c.Health.Port[9090] = HealthPort{Interval: Duration{time.Second}, Timeout: Duration{time.Second}, Rise: 2, Fall: 3}
			},
			wantChanged: []string{"health.port.9090"},
		},
		{
			name: "the NIC",
			edit: func(c *Config) {
				c.NIC.Interface = "eth2"
				c.Log.Level = "debug"
			},
			wantKeys: []string{"nic.interface"},
		},
		{
			name: "every fixed key",
			edit: func(c *Config) {
				c.NIC.Driver = "tap"
				c.NIC.Interface = "eth2"
				c.NIC.MAC = []byte{2, 0, 0, 0, 0, 1}
				c.NIC.MTU = 9000
				c.NIC.Networks = []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}
				c.NIC.Router = netip.MustParseAddr("198.18.1.1")
				c.Control.Listen = "127.0.0.1:7071"
				c.Control.TokenFile = "/etc/vipmux/token"
				c.State.Path = "/tmp/state.json"
				c.Dispatch.MaxInFlight = 10
				c.NIC.Offload = !c.NIC.Offload
				c.Metrics.Listen = "127.0.0.1:9100"
			},
			wantKeys: []string{
				"control.listen", "control.token_file", "dispatch.max_in_flight", "metrics.listen",
				"nic.driver", "nic.interface", "nic.mac", "nic.mtu", "nic.networks", "nic.offload", "nic.router", "state.path",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := withDefaults(func(c *Config) {
				c.Shared.Address = netip.MustParseAddr("198.18.0.100")
				c.Health.Port = map[uint16]HealthPort{8080: {Interval: Duration{time.Second}, Timeout: Duration{time.Second}, Rise: 2, Fall: 2}}
			})
			next := withDefaults(func(c *Config) {
				c.Shared.Address = old.Shared.Address
				c.Health.Port = map[uint16]HealthPort{8080: old.Health.Port[8080]}
				tc.edit(c)
			})
			changed, err := old.Changes(next)
			if tc.wantKeys == nil {
				if err != nil {
					t.Fatalf("Changes() error = %v, want none", err)
				}
				var keys []string
				for _, c := range changed {
					keys = append(keys, c.Key)
				}
				if diff := cmp.Diff(tc.wantChanged, keys); diff != "" {
					t.Errorf("Changes() keys (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("Changes() = %v, nil; want an error naming %v", changed, tc.wantKeys)
			}
			if changed != nil {
				t.Errorf("Changes() changed = %v with an error, want nil", changed)
			}
			if !errors.Is(err, ErrNotReloadable) {
				t.Errorf("Changes() error = %v, want ErrNotReloadable", err)
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tc.wantKeys[0] {
				t.Errorf("Changes() first KeyError = %v, want key %s", ke, tc.wantKeys[0])
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.wantKeys) {
				t.Fatalf("Changes() error has %d lines, want %d:\n%v", len(lines), len(tc.wantKeys), err)
			}
			for i, key := range tc.wantKeys {
				if !strings.HasPrefix(lines[i], key+": cannot change while the gateway runs") {
					t.Errorf("Changes() error line %d = %q, want it to start with %q", i, lines[i], key+": cannot change ...")
				}
			}
		})
	}
}

func TestChangesValues(t *testing.T) {
	old := withDefaults(nil)
	next := withDefaults(func(c *Config) { c.Control.Listen = "127.0.0.1:7071" })
	_, err := old.Changes(next)
	want := `control.listen: cannot change while the gateway runs: restart it to apply, or change it back (in force: "127.0.0.1:7070", file: "127.0.0.1:7071")`
	if err == nil || err.Error() != want {
		t.Errorf("Changes() error = %v, want %s", err, want)
	}
}

func TestChangeString(t *testing.T) {
	old := withDefaults(nil)
	next := withDefaults(func(c *Config) {
		c.Log.Level = "debug"
		c.Shared.Address = netip.MustParseAddr("198.18.0.100")
		c.Health.Interval = Duration{time.Second}
	})
	changed, err := old.Changes(next)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changed {
		got = append(got, c.String())
	}
	want := []string{`health.interval: "100ms" -> "1s"`, `log.level: "info" -> "debug"`, `shared.address: none -> 198.18.0.100`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Changes() strings (-want +got):\n%s", diff)
	}
}

func TestReloadable(t *testing.T) {
	for key, want := range map[string]bool{
		"log.level": true, "health.port.8080.fall": true, "arp.garp_count": true, "shared.address": true,
		"dispatch.dial_timeout": true, "dispatch.max_in_flight": false, "nic.networks": false,
		"control.listen": false, "state.path": false, "healthy": false,
	} {
		if got := Reloadable(key); got != want {
			t.Errorf("Reloadable(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestParseKeyError(t *testing.T) {
	_, err := Parse([]byte(minimal + "[health]\nrise = 0\n[nic.x]\n"))
	var ke *KeyError
	if !errors.As(err, &ke) {
		t.Fatalf("Parse() error = %v, want a *KeyError", err)
	}
	if !strings.Contains(err.Error(), "nic.x: line 8: unknown key") || !strings.Contains(err.Error(), "health.rise: 0 is out of range") {
		t.Errorf("Parse() error = %v, want it to name nic.x and health.rise", err)
	}
	if ke.Key != "nic.x" {
		t.Errorf("first KeyError key = %q, want nic.x", ke.Key)
	}
}
