package config

import (
	"errors"
	"fmt"
	"maps"
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
	// Line is the line of the file that sets the key, for a value that
	// Parse cannot read as what the key takes (of the wrong type, or
	// that does not parse) and for an unknown key; 0 otherwise.
	Line int
	// Err is what is wrong with it.
	Err error
}

// Error formats the problem as "key: problem", or "key: line N: problem".
func (e *KeyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %v", e.Key, e.Line, e.Err)
	}
	return e.Key + ": " + e.Err.Error()
}

// Unwrap returns the problem.
func (e *KeyError) Unwrap() error { return e.Err }

// ErrNotReloadable reports a key whose new value can only take effect when
// the gateway starts: the front NIC, the control listener, the state file,
// the forwarder's handshake limit.
var ErrNotReloadable = errors.New("cannot change while the gateway runs: restart it to apply, or change it back")

// Reloadable reports whether name, a key ("section.key") or a section
// ("health", "health.port.8080"), can change while the gateway runs: every
// key it names is marked reloadable in keys.
func Reloadable(name string) bool {
	want := strings.Split(name, ".")
	found := false
	for _, k := range keys {
		for _, p := range paths(k) {
			if !within(want, p) {
				continue
			}
			found = true
			if !k.isReloadable() {
				return false
			}
		}
	}
	return found
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
// key, with the values as the file writes them. A [health.port.PORT]
// table that only one of them has is one change of the whole table.
func diff(a, b *Config) []Change {
	var out []Change
	for _, k := range keys {
		if !k.equal(a, b) {
			out = append(out, Change{Key: k.keyName(), Old: k.show(a), New: k.show(b)})
		}
	}
	ports := slices.Collect(maps.Keys(a.Health.Port))
	for p := range b.Health.Port {
		if _, ok := a.Health.Port[p]; !ok {
			ports = append(ports, p)
		}
	}
	for _, p := range ports {
		x, okx := a.Health.Port[p]
		y, oky := b.Health.Port[p]
		key := fmt.Sprintf("%s.%d", portTable, p)
		switch {
		case !okx:
			out = append(out, Change{Key: key, Old: "none", New: formatPort(&y)})
		case !oky:
			out = append(out, Change{Key: key, Old: formatPort(&x), New: "none"})
		default:
			for _, k := range portKeys() {
				if !k.equalPort(&x, &y) {
					out = append(out, Change{Key: key + "." + lastName(k.keyName()), Old: k.formatPort(&x), New: k.formatPort(&y)})
				}
			}
		}
	}
	slices.SortFunc(out, func(x, y Change) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// formatPort renders a [health.port.PORT] table as an inline table:
// {interval="1s" timeout="1s" rise=2 fall=3}.
func formatPort(p *HealthPort) string {
	var s []string
	for _, k := range portKeys() {
		s = append(s, lastName(k.keyName())+"="+k.formatPort(p))
	}
	return "{" + strings.Join(s, " ") + "}"
}
