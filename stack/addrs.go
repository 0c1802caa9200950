package stack

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

var _ registry.Applier = (*Stack)(nil)

// SetStatic replaces the Static addresses (mode 2's shared address) while
// the stack runs. A new one is held and announced at once, not probed (as
// in New); if the table holds it already, it only becomes static. One that
// is no longer static is released, unless the table holds it: the table
// owns it from then on. On an error nothing changes.
func (st *Stack) SetStatic(addrs []netip.Addr) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.addableLocked()
	var inTable map[netip.Addr]struct{}
	if st.table != nil {
		inTable = st.table.Addrs()
	}
	want := make(map[netip.Addr]struct{}, len(addrs))
	var added []netip.Addr
	for _, a := range addrs {
		want[a] = struct{}{}
		_, static := st.static[a]
		_, held := inTable[a]
		if static || held {
			continue
		}
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return fmt.Errorf("set static addresses: %w", err)
		}
		added = append(added, a)
	}
	var removed []netip.Addr
	for a := range st.static {
		_, keep := want[a]
		_, held := inTable[a]
		if !keep && !held {
			st.remove(a)
			removed = append(removed, a)
		}
	}
	st.static = want
	st.logAddrs("holding", added)
	st.logAddrs("released", removed)
	return nil
}

// Prepare implements registry.Applier: it adds the addresses that next
// holds and prev does not, after probing the front link for another holder
// of each new address (see Options.DADProbes; this takes DADProbes x
// DADInterval). If a probe is answered or an add fails, nothing is held:
// the addresses added so far are removed again. The probes run without
// the stack's lock: Commit and other Prepares go on meanwhile, and the
// registry calls Prepare for new addresses without its own write lock
// (it never prepares one address twice at once).
func (st *Stack) Prepare(prev, next *registry.Table) error {
	st.mu.Lock()
	news := st.heldOnly(st.diff(next, prev))
	wait, ndp, err := st.startProbesLocked(news)
	st.mu.Unlock()
	if err != nil {
		return err
	}
	err = wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	if ndp {
		st.endNDPLocked()
	}
	if err != nil {
		return err
	}
	if len(news) > 0 { // a change of states only never waits for probes
		st.addableLocked()
	}
	var added []netip.Addr
	for _, a := range news {
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return err
		}
		added = append(added, a)
	}
	for _, a := range news {
		delete(st.restored, a)
	}
	st.logAddrs("holding", news)
	// Prepare only adds: what prev holds stays held until a Commit.
	st.table = registry.Union(prev, next)
	return nil
}

// Commit implements registry.Applier: it removes the addresses that prev
// holds and next does not. Connections on them stop receiving.
func (st *Stack) Commit(prev, next *registry.Table) {
	st.mu.Lock()
	defer st.mu.Unlock()
	gone := st.onNICOnly(st.diff(prev, next))
	for _, a := range gone {
		st.remove(a)
	}
	st.logAddrs("released", gone)
	st.table = next
}

// maxAddrLines is how many addresses one change logs one line each; a
// larger change (a batch of registrations) logs one line for all.
const maxAddrLines = 8

// logAddrs logs that the stack is holding or released addrs (sorted): a
// line per address, or one line with their number and range for a batch.
func (st *Stack) logAddrs(what string, addrs []netip.Addr) {
	switch {
	case len(addrs) == 0:
	case len(addrs) <= maxAddrLines:
		for _, a := range addrs {
			st.log.Info(what+" address", "ip", a)
		}
	default:
		st.log.Info(what+" addresses", "count", len(addrs), "first", addrs[0], "last", addrs[len(addrs)-1])
	}
}

// diff returns the addresses of a that b does not hold, static ones left
// out, sorted. It looks only at what the two tables do not share
// (registry.AddrDiff), so a change of one binding costs the same in a table
// of 10,000 addresses as in one of 10.
func (st *Stack) diff(a, b *registry.Table) []netip.Addr {
	d := slices.DeleteFunc(registry.AddrDiff(a, b), func(ip netip.Addr) bool {
		_, static := st.static[ip]
		return static
	})
	slices.SortFunc(d, netip.Addr.Compare)
	return d
}

// Addrs returns the addresses that the NIC holds, sorted.
func (st *Stack) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, pa := range st.s.NICInfo()[nicID].ProtocolAddresses {
		if a := FromAddr(pa.AddressWithPrefix.Address); a.IsValid() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// add holds a and starts announcing it; st.mu must be held (or st not yet
// shared).
func (st *Stack) add(a netip.Addr) error {
	bits := -1
	for _, p := range st.networks {
		if p.Contains(a) {
			bits = p.Bits()
			break
		}
	}
	if bits < 0 {
		return fmt.Errorf("hold %s: %w %v", a, ErrNotInNetworks, st.networks)
	}
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: ToAddr(a), PrefixLen: bits},
	}
	if err := st.s.AddProtocolAddress(nicID, pa, gstack.AddressProperties{}); err != nil {
		return fmt.Errorf("hold %s: %s", a, err)
	}
	if st.garp.count > 0 {
		st.startAnnounce(a)
	}
	return nil
}

// remove releases a and stops its announcements; st.mu must be held.
func (st *Stack) remove(a netip.Addr) {
	st.announcer.stop(a)
	if err := st.s.RemoveAddress(nicID, ToAddr(a)); err != nil {
		st.log.Warn("release address", "ip", a, "err", err.String())
	}
}

// ToAddr converts a to gVisor's address type. It is the one conversion
// from netip to gVisor in vipmux: packages that meet gVisor's addresses
// (dispatch, tests building frames) use it and FromAddr.
func ToAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// FromAddr converts gVisor's address type to a netip.Addr: a 4-byte
// address becomes IPv4, a 16-byte one IPv6 (an IPv4-mapped one stays
// mapped), anything else the zero Addr. It does not allocate; dispatch
// calls it twice on every SYN.
func FromAddr(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}
