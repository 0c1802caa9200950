package registry

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// State is a member's state within its binding.
type State string

// Member states.
const (
	// Active members receive new connections; a binding has at most one.
	Active State = "active"
	// Standby members wait for a switch.
	Standby State = "standby"
)

// Key identifies a binding. Port 0 means every port of IP.
type Key struct {
	IP   netip.Addr `json:"ip"`
	Port uint16     `json:"port"`
}

// String formats the key as ip:port, or ip:* for every port.
func (k Key) String() string {
	if k.Port == 0 {
		if k.IP.Is6() {
			return "[" + k.IP.String() + "]:*"
		}
		return k.IP.String() + ":*"
	}
	return netip.AddrPortFrom(k.IP, k.Port).String()
}

// Member is one server computer in a binding.
type Member struct {
	// Name is the server computer's name, unique within the binding.
	Name string `json:"name"`
	// Backend is where its connections go; port 0 means the port that the
	// client dialled.
	Backend netip.AddrPort `json:"backend"`
	// State is active or standby.
	State State `json:"state"`
	// Since is when the member entered State.
	Since time.Time `json:"since"`
	// TTL is the member's lease; zero means permanent (the patent's
	// registration). A leased member must be renewed before Expires.
	TTL time.Duration `json:"ttl,omitempty"`
	// Expires is when the lease runs out; zero without a lease.
	Expires time.Time `json:"expires,omitzero"`
	// Down marks a member that its health check or its lease declared
	// gone; a down member receives no connections.
	Down bool `json:"down,omitempty"`
	// DownCause says what marked the member down; DownNone while it is
	// up. State files from before this field load with the cause that
	// their Reason names.
	DownCause DownCause `json:"down_cause,omitempty"`
	// FailedOver marks a former active that automatic failover demoted.
	FailedOver bool `json:"failed_over,omitempty"`
	// Cause says what last changed State or Down, for programs.
	Cause ChangeCause `json:"cause,omitempty"`
	// Reason says why State or Down last changed, for people: Cause with
	// details ("automatic failover: web-a lease expired").
	Reason string `json:"reason,omitempty"`
	// ProxyProtocol is the PROXY protocol header that the gateway writes
	// to each of the member's backend connections; ProxyNone writes none.
	// State files from before this field load as ProxyNone.
	ProxyProtocol ProxyProtocol `json:"proxy_protocol,omitempty"`
}

// Binding is one row of the table: a key and its ordered members.
type Binding struct {
	Key
	Members []Member `json:"members"`
}

// Active returns the binding's active member, down or not.
func (b *Binding) Active() (Member, bool) {
	for _, m := range b.Members {
		if m.State == Active {
			return m, true
		}
	}
	return Member{}, false
}

// Serving returns the member that new connections go to: the active
// member unless it is down.
func (b *Binding) Serving() (Member, bool) {
	m, ok := b.Active()
	if !ok || m.Down {
		return Member{}, false
	}
	return m, true
}

// Has reports whether name is a member of b.
func (b *Binding) Has(name string) bool { return b.index(name) >= 0 }

// Member returns member name of b.
func (b *Binding) Member(name string) (Member, bool) {
	if i := b.index(name); i >= 0 {
		return b.Members[i], true
	}
	return Member{}, false
}

func (b *Binding) index(name string) int {
	return slices.IndexFunc(b.Members, func(m Member) bool { return m.Name == name })
}

// clone returns a copy of b that shares no memory with it, for handing out
// of the registry: the caller may modify it without touching the snapshot.
func (b *Binding) clone() Binding {
	return Binding{Key: b.Key, Members: slices.Clone(b.Members)}
}

// cloneBinding returns a deep copy of b (or a new empty binding at k).
func cloneBinding(k Key, b *Binding) *Binding {
	if b == nil {
		return &Binding{Key: k}
	}
	return &Binding{Key: b.Key, Members: slices.Clone(b.Members)}
}

// Table is an immutable snapshot of every binding. Never modify a Table
// obtained from the registry.
//
// A table is persistent: the registry derives the next table from the
// current one by copying only the path to what changed (see trie), so a
// change costs the same whatever the table's size, and the tables of two
// moments share every binding that did not change between them.
type Table struct {
	bindings trie[Key, *Binding]
	// ports are the bindings with a port (mode 2), also in bindings: a
	// table of 10,000 mode-1 addresses has a handful of them, which health
	// checks walk on every change.
	ports trie[Key, *Binding]
	// leased are the bindings with a member on a lease (also in
	// bindings): Expire looks at them every 100 ms, not at the whole
	// table.
	leased trie[Key, *Binding]
	// ips counts, per IP, the bindings and drains that hold it: the
	// addresses that the stack must hold, kept up to date change by
	// change instead of recomputed from the whole table.
	ips trie[addrKey, int]
	// backends counts, per backend address, the members that use it:
	// register refuses a new front address that is a backend (it would
	// send that member's connections back into the gateway) without
	// walking the table.
	backends trie[addrKey, int]
	// drains are deregistered members whose connections still run; see
	// Drain. Shared between tables: copied before any change.
	drains []Drain
	// parts are the tables of a union (see Union), which has no bindings
	// of its own; their addresses are its addresses.
	parts []*Table
	// changes counts the binding and drain changes that led to this
	// table since the registry started: two tables whose counts are close
	// differ in few entries (see AddrDiff).
	changes uint64
	// addrs caches Addrs: a table no longer changes once anything reads
	// its addresses.
	addrs atomic.Pointer[map[netip.Addr]struct{}]
}

// Lookup returns the member that a connection to (ip, port) goes to: the
// active member of the exact (ip, port) binding if that binding exists,
// otherwise the active member of (ip, *). A port binding without an active
// member does not fall back to the every-port binding.
func (t *Table) Lookup(ip netip.Addr, port uint16) (Member, Key, bool) {
	k := Key{IP: ip, Port: port}
	b, ok := t.bindings.get(k)
	if !ok {
		k.Port = 0
		if b, ok = t.bindings.get(k); !ok {
			return Member{}, k, false
		}
	}
	m, ok := b.Serving()
	return m, k, ok
}

// member finds member name of binding k, or returns a not-found
// FieldError naming the binding's field or nameField.
func (t *Table) member(k Key, name, nameField string) (*Binding, int, error) {
	b, ok := t.bindings.get(k)
	if !ok {
		return nil, -1, fieldErr(ErrNotFound, keyField(k), "nothing is registered on %s", k)
	}
	i := b.index(name)
	if i < 0 {
		return nil, -1, fieldErr(ErrNotFound, nameField, "%s is not registered on %s", name, k)
	}
	return b, i, nil
}

// Binding returns the binding at k.
func (t *Table) Binding(k Key) (*Binding, bool) {
	return t.bindings.get(k)
}

// Bindings returns every binding ordered by IP, then port.
func (t *Table) Bindings() []*Binding {
	out := make([]*Binding, 0, t.bindings.Len())
	for _, b := range t.bindings.All() {
		out = append(out, b)
	}
	sortBindings(out)
	return out
}

// PortBindings returns the bindings with a port (mode 2) ordered by IP,
// then port. Its cost follows their number, not the table's size: a
// table of many mode-1 addresses has few of them.
func (t *Table) PortBindings() []*Binding {
	out := make([]*Binding, 0, t.ports.Len())
	for _, b := range t.ports.All() {
		out = append(out, b)
	}
	sortBindings(out)
	return out
}

// sortBindings orders bs by IP, then port.
func sortBindings(bs []*Binding) {
	slices.SortFunc(bs, func(a, b *Binding) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
}

// Addrs returns the set of IPs that the table holds. The set is computed
// once per table and shared: callers must not modify it. It costs a pass
// over the whole table: Holds and AddrDiff answer the usual questions
// without one.
func (t *Table) Addrs() map[netip.Addr]struct{} {
	if p := t.addrs.Load(); p != nil {
		return *p
	}
	out := make(map[netip.Addr]struct{}, t.ips.Len())
	for a := range t.ips.All() {
		out[a.Addr] = struct{}{}
	}
	for _, p := range t.parts {
		for ip := range p.Addrs() {
			out[ip] = struct{}{}
		}
	}
	t.addrs.Store(&out)
	return out
}

// Holds reports whether the table holds ip.
func (t *Table) Holds(ip netip.Addr) bool {
	if t.parts != nil {
		return slices.ContainsFunc(t.parts, func(p *Table) bool { return p.Holds(ip) })
	}
	_, ok := t.ips.get(addrKey{ip})
	return ok
}

// AddrDiff returns the addresses that a holds and b does not, in no
// particular order. Its cost follows the number of changes between the two
// tables, not their size: it compares only what they do not share.
// Either may be a union (see Union).
func AddrDiff(a, b *Table) []netip.Addr {
	switch {
	case len(a.parts) > 0:
		var out []netip.Addr
		for _, p := range a.parts {
			out = append(out, AddrDiff(p, b)...)
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return slices.Compact(out)
	case len(b.parts) > 0:
		// a - (b1 ∪ b2) = (a - bi) minus what the others hold; diff
		// against the part nearest to a (fewest changes apart), which
		// shares the most with it.
		near := slices.MinFunc(b.parts, func(x, y *Table) int {
			return cmpDistance(a.changes, x.changes, y.changes)
		})
		out := AddrDiff(a, near)
		return slices.DeleteFunc(out, func(ip netip.Addr) bool {
			return slices.ContainsFunc(b.parts, func(p *Table) bool { return p != near && p.Holds(ip) })
		})
	}
	var out []netip.Addr
	diff(a.ips, b.ips, func(k addrKey, _ int, inA bool, _ int, inB bool) {
		if inA && !inB {
			out = append(out, k.Addr)
		}
	})
	return out
}

// cmpDistance compares the distances of x and y from c.
func cmpDistance(c, x, y uint64) int {
	dist := func(v uint64) uint64 {
		if v > c {
			return v - c
		}
		return c - v
	}
	return cmp.Compare(dist(x), dist(y))
}

// Len returns the number of bindings.
func (t *Table) Len() int { return t.bindings.Len() }

// Union returns a table, for Addrs and Holds only (it has no bindings of
// its own), that holds the addresses of both; a itself when b is a. It
// copies nothing. The registry hands its Applier such tables while a change
// is being saved: what the stack holds is then the published table's
// addresses and the pending one's.
func Union(a, b *Table) *Table {
	if a == b {
		return a
	}
	return &Table{parts: []*Table{a, b}}
}

// clone returns a table for update to change: it shares everything with t
// (the persistent tries and, until it changes them, the drains).
func (t *Table) clone() *Table {
	return &Table{bindings: t.bindings, ports: t.ports, leased: t.leased, ips: t.ips, backends: t.backends, drains: t.drains[:len(t.drains):len(t.drains)], changes: t.changes}
}

// set puts b at its key, replacing what was there; t is a table being
// built.
func (t *Table) set(b *Binding) {
	old, had := t.bindings.get(b.Key)
	if !had {
		t.hold(b.IP, 1)
		old = &Binding{}
	}
	if !sameBackends(old.Members, b.Members) {
		for _, m := range old.Members {
			t.countBackend(m.Backend.Addr(), -1)
		}
		for _, m := range b.Members {
			t.countBackend(m.Backend.Addr(), 1)
		}
	}
	t.bindings = t.bindings.with(b.Key, b)
	if b.Port != 0 {
		t.ports = t.ports.with(b.Key, b)
	}
	if slices.ContainsFunc(b.Members, func(m Member) bool { return m.TTL > 0 }) {
		t.leased = t.leased.with(b.Key, b)
	} else {
		t.leased = t.leased.without(b.Key)
	}
	t.changes++
}

// del removes the binding at k, if any; t is a table being built.
func (t *Table) del(k Key) {
	old, had := t.bindings.get(k)
	if !had {
		return
	}
	for _, m := range old.Members {
		t.countBackend(m.Backend.Addr(), -1)
	}
	t.bindings = t.bindings.without(k)
	if k.Port != 0 {
		t.ports = t.ports.without(k)
	}
	t.leased = t.leased.without(k)
	t.hold(k.IP, -1)
	t.changes++
}

// sameBackends reports whether a and b are members with the same
// backends, in order: set's shortcut for the changes that only change
// states.
func sameBackends(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool { return x.Backend.Addr() == y.Backend.Addr() })
}

// countBackend adds d to the count of members whose backend is a.
func (t *Table) countBackend(a netip.Addr, d int) {
	k := addrKey{a.Unmap()}
	n, _ := t.backends.get(k)
	if n += d; n > 0 {
		t.backends = t.backends.with(k, n)
	} else {
		t.backends = t.backends.without(k)
	}
}

// backendUser returns a member whose backend is ip, as "member NAME of
// binding KEY"; it walks the table only when there is one.
func (t *Table) backendUser(ip netip.Addr) (string, bool) {
	if _, ok := t.backends.get(addrKey{ip}); !ok {
		return "", false
	}
	for k, b := range t.bindings.All() {
		for _, m := range b.Members {
			if m.Backend.Addr().Unmap() == ip {
				return fmt.Sprintf("member %s of binding %s", m.Name, k), true
			}
		}
	}
	return "", false
}

// hold adds d to ip's count of holders, removing ip at zero.
func (t *Table) hold(ip netip.Addr, d int) {
	k := addrKey{ip}
	n, _ := t.ips.get(k)
	if n += d; n > 0 {
		t.ips = t.ips.with(k, n)
	} else {
		t.ips = t.ips.without(k)
	}
}

// addDrain appends d to the drains; t is a table being built.
func (t *Table) addDrain(d Drain) {
	t.drains = append(t.drains[:len(t.drains):len(t.drains)], d)
	t.hold(d.Key.IP, 1)
	t.changes++
}

// deleteDrains removes the drains for which del is true, calling del once
// per drain; t is a table being built. It copies the drains only when one
// goes.
func (t *Table) deleteDrains(del func(Drain) bool) {
	var kept []Drain
	for i, d := range t.drains {
		if !del(d) {
			if kept != nil {
				kept = append(kept, d)
			}
			continue
		}
		if kept == nil {
			kept = append(make([]Drain, 0, len(t.drains)), t.drains[:i]...)
		}
		t.hold(d.Key.IP, -1)
		t.changes++
	}
	if kept != nil {
		t.drains = kept
	}
}
