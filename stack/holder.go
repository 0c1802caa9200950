package stack

import (
	"fmt"
	"net/netip"
	"slices"
)

// Holder says which of the table's addresses this gateway holds. In a
// cluster of gateways sharing one table (package cluster) each address is
// held by exactly one of them, and each stack holds only the addresses its
// gateway holds; a single gateway has no Holder and holds the whole table.
//
// Holds is called with the stack's lock held, by Prepare, Commit and
// Rehold; it must not call back into the stack. After the set of addresses
// Holds accepts changes, its owner calls Rehold, which makes the stack
// follow.
type Holder interface {
	Holds(netip.Addr) bool
}

// nicSetLocked returns the addresses on the NIC; st.mu must be held.
func (st *Stack) nicSetLocked() map[netip.Addr]struct{} {
	on := map[netip.Addr]struct{}{}
	for _, pa := range st.s.NICInfo()[nicID].ProtocolAddresses {
		if a := FromAddr(pa.AddressWithPrefix.Address); a.IsValid() {
			on[a] = struct{}{}
		}
	}
	return on
}

// heldOnly returns the addresses of addrs that the Holder holds and the NIC
// does not have yet (all of addrs without a Holder); st.mu must be held.
func (st *Stack) heldOnly(addrs []netip.Addr) []netip.Addr {
	if st.holder == nil || len(addrs) == 0 {
		return addrs
	}
	on := st.nicSetLocked()
	return slices.DeleteFunc(addrs, func(a netip.Addr) bool {
		_, have := on[a]
		return have || !st.holder.Holds(a)
	})
}

// onNICOnly returns the addresses of addrs that the NIC has (all of addrs
// without a Holder: then the NIC has every table address); st.mu must be
// held.
func (st *Stack) onNICOnly(addrs []netip.Addr) []netip.Addr {
	if st.holder == nil || len(addrs) == 0 {
		return addrs
	}
	on := st.nicSetLocked()
	return slices.DeleteFunc(addrs, func(a netip.Addr) bool {
		_, have := on[a]
		return !have
	})
}

// Rehold makes the NIC hold exactly the table's addresses that the Holder
// holds (and the static ones), after the Holder's answers changed: it
// releases the addresses no longer held first, then probes the front link
// for another holder of each newly held address (Options.DADProbes: the
// tripwire against a previous holder that still answers), and holds and
// announces them. It returns the addresses it added.
//
// If a probe is answered, Rehold returns a *ConflictError naming the
// address and holds none of the new ones (the releases stand); the caller
// gives the named address up and calls Rehold again. Without a Holder
// Rehold does nothing.
func (st *Stack) Rehold() ([]netip.Addr, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.holder == nil {
		return nil, nil
	}
	on := st.nicSetLocked()
	var inTable map[netip.Addr]struct{}
	if st.table != nil {
		inTable = st.table.Addrs()
	}
	var gone, news []netip.Addr
	for a := range on {
		if _, static := st.static[a]; static {
			continue
		}
		if _, ok := inTable[a]; !ok || !st.holder.Holds(a) {
			gone = append(gone, a)
		}
	}
	for a := range inTable {
		if _, static := st.static[a]; static {
			continue
		}
		if _, ok := on[a]; !ok && st.holder.Holds(a) {
			news = append(news, a)
		}
	}
	slices.SortFunc(gone, netip.Addr.Compare)
	slices.SortFunc(news, netip.Addr.Compare)
	for _, a := range gone {
		st.remove(a)
	}
	st.logAddrs("released", gone)
	// The probe waits with st.mu held: a takeover is rare and must not
	// interleave with a change of the table (its results only go to a
	// channel, never to st.mu).
	wait, ndp, err := st.startProbesLocked(news)
	if err == nil {
		err = wait()
	}
	if ndp {
		st.endNDPLocked()
	}
	if err != nil {
		return nil, fmt.Errorf("hold %d taken-over addresses: %w", len(news), err)
	}
	if len(news) > 0 {
		st.addableLocked() // no NDP probing window of another change open
	}
	var added []netip.Addr
	for _, a := range news {
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return nil, err
		}
		added = append(added, a)
		delete(st.restored, a)
	}
	st.logAddrs("holding", added)
	return added, nil
}

// Reannounce sends one more announcement (gratuitous ARP, unsolicited
// Neighbor Advertisement) of each address of addrs that the NIC still
// holds: a taken-over address is announced again a few seconds after the
// takeover, for a neighbour that missed the first ones.
func (st *Stack) Reannounce(addrs []netip.Addr) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, a := range addrs {
		if st.holdsLocked(a) {
			st.announce(a)
		}
	}
}
