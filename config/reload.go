package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// KeyError is a problem with one key of the configuration. Parse, Validate
// and Changes report their problems as KeyErrors (joined with errors.Join
// when there are several), so that a caller can name the first bad key
// with errors.As, e.g. in the "field" of an API error.
type KeyError struct {
	// Key is the key as "section.key", e.g. "health.rise" or
	// "nic.networks[0]".
	Key string
	// Err is what is wrong with it.
	Err error
}

// Error formats the problem as "key: problem".
func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *KeyError) Unwrap() error { return e.Err }

// ErrNotReloadable reports a key whose new value can only take effect when
// the gateway starts: the front NIC, the control listener, the state file,
// the forwarder's handshake limit.
var ErrNotReloadable = errors.New("cannot change while the gateway runs: restart it to apply, or change it back")

// reloadable lists the sections and keys that a running gateway applies
// when it reloads its configuration. Every other key is fixed at start-up.
// A section name stands for every key in it.
var reloadable = []string{
	"shared.address",
	"dispatch.dial_timeout",
	"dispatch.time_wait",
	"dispatch.delayed_ack",
	"health",
	"arp",
	"log",
}

// Reloadable reports whether key ("section.key") can change while the
// gateway runs.
func Reloadable(key string) bool {
	for _, r := range reloadable {
		if key == r || strings.HasPrefix(key, r+".") {
			return true
		}
	}
	return false
}

// Change is one key whose value differs between two configurations.
type Change struct {
	// Key is the key as "section.key", e.g. "health.interval".
	Key string
	// Old and New are the values, formatted as in the file ("none" for a
	// key left out without a default).
	Old, New string
}

// String formats the change as `key: old -> new`.
func (c Change) String() string { return c.Key + ": " + c.Old + " -> " + c.New }

// Changes compares next with c, the configuration in force, and returns
// the keys whose values differ, sorted by key. When a key that cannot change at
// run time (see Reloadable) differs, it returns an error instead: one
// *KeyError of kind ErrNotReloadable per such key, joined, each with the
// old and the new value. Both configurations must be valid.
func (c *Config) Changes(next *Config) ([]Change, error) {
	var changed []Change
	var errs []error
	for _, d := range diff(c, next) {
		if !Reloadable(d.Key) {
			errs = append(errs, &KeyError{Key: d.Key, Err: fmt.Errorf("%w (in force: %s, file: %s)", ErrNotReloadable, d.Old, d.New)})
			continue
		}
		changed = append(changed, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return changed, nil
}

// diff returns every key whose value differs between a and b, sorted by
// key. Keys are named from the toml tags of the raw file shape, so that
// they read as in the file.
func diff(a, b *Config) []Change {
	var out []Change
	add := func(key string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, Change{Key: key, Old: format(x), New: format(y)})
		}
	}
	add("nic.driver", a.NIC.Driver, b.NIC.Driver)
	add("nic.interface", a.NIC.Interface, b.NIC.Interface)
	add("nic.mac", a.NIC.MAC.String(), b.NIC.MAC.String())
	add("nic.mtu", a.NIC.MTU, b.NIC.MTU)
	add("nic.networks", fmt.Sprint(a.NIC.Networks), fmt.Sprint(b.NIC.Networks))
	add("nic.router", a.NIC.Router, b.NIC.Router)
	add("nic.offload", a.NIC.Offload, b.NIC.Offload)
	add("control.listen", a.Control.Listen, b.Control.Listen)
	add("control.token_file", a.Control.TokenFile, b.Control.TokenFile)
	add("metrics.listen", a.Metrics.Listen, b.Metrics.Listen)
	add("state.path", a.State.Path, b.State.Path)
	add("shared.address", a.Shared.Address, b.Shared.Address)
	add("dispatch.dial_timeout", a.Dispatch.DialTimeout, b.Dispatch.DialTimeout)
	add("dispatch.max_in_flight", a.Dispatch.MaxInFlight, b.Dispatch.MaxInFlight)
	add("dispatch.time_wait", a.Dispatch.TimeWait, b.Dispatch.TimeWait)
	add("dispatch.delayed_ack", a.Dispatch.DelayedAck, b.Dispatch.DelayedAck)
	add("health.enabled", a.Health.Enabled, b.Health.Enabled)
	add("health.interval", a.Health.Interval, b.Health.Interval)
	add("health.timeout", a.Health.Timeout, b.Health.Timeout)
	add("health.rise", a.Health.Rise, b.Health.Rise)
	add("health.fall", a.Health.Fall, b.Health.Fall)
	add("health.failback", a.Health.Failback, b.Health.Failback)
	ports := slices.Sorted(maps.Keys(a.Health.Port))
	for p := range b.Health.Port {
		if _, ok := a.Health.Port[p]; !ok {
			ports = append(ports, p)
		}
	}
	slices.Sort(ports)
	for _, p := range ports {
		x, okx := a.Health.Port[p]
		y, oky := b.Health.Port[p]
		key := fmt.Sprintf("health.port.%d", p)
		switch {
		case !okx:
			out = append(out, Change{Key: key, Old: "none", New: format(y)})
		case !oky:
			out = append(out, Change{Key: key, Old: format(x), New: "none"})
		default:
			add(key+".interval", x.Interval, y.Interval)
			add(key+".timeout", x.Timeout, y.Timeout)
			add(key+".rise", x.Rise, y.Rise)
			add(key+".fall", x.Fall, y.Fall)
		}
	}
	add("arp.garp_count", a.ARP.GARPCount, b.ARP.GARPCount)
	add("arp.garp_interval", a.ARP.GARPInterval, b.ARP.GARPInterval)
	add("arp.dad_probes", a.ARP.DADProbes, b.ARP.DADProbes)
	add("arp.dad_interval", a.ARP.DADInterval, b.ARP.DADInterval)
	add("log.level", a.Log.Level, b.Log.Level)
	add("log.format", a.Log.Format, b.Log.Format)
	slices.SortFunc(out, func(x, y Change) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// format renders a value as an operator wrote it: strings quoted, the
// zero address as "none".
func format(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return "none"
		}
		return fmt.Sprintf("%q", v)
	case Duration:
		return fmt.Sprintf("%q", v.Duration.String())
	case HealthPort:
		return fmt.Sprintf("{interval=%q timeout=%q rise=%d fall=%d}", v.Interval.Duration, v.Timeout.Duration, v.Rise, v.Fall)
	case fmt.Stringer:
		if s := v.String(); s != "invalid IP" {
			return s
		}
		return "none"
	}
	return fmt.Sprint(v)
}
