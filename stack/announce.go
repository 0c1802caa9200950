package stack

import (
	"container/heap"
	"context"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// announcer sends the repeated announcements of the held addresses
// (gratuitous ARP, unsolicited Neighbor Advertisements) from one goroutine
// with a schedule, instead of one goroutine and one ticker per address: a
// batch of 10,000 new addresses used to start 10,000 goroutines, whose
// stacks alone took ~80 MB of RSS while they ran (issue 14, lever 7).
type announcer struct {
	send func(netip.Addr)
	// wake has room for one signal: the schedule's head changed.
	wake chan struct{}

	// mu guards the following fields, and is held while an announcement
	// is sent, so that after stop returns no announcement of the address
	// goes out.
	mu sync.Mutex
	// due is the schedule, earliest first; entries whose generation is no
	// longer live[addr] are stale and skipped.
	due  dueHeap
	live map[netip.Addr]uint64
	gen  uint64
}

// dueAnnouncement is one address's next announcement.
type dueAnnouncement struct {
	addr     netip.Addr
	gen      uint64
	at       time.Time
	left     int
	interval time.Duration
}

type dueHeap []dueAnnouncement

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueAnnouncement)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newAnnouncer(send func(netip.Addr)) *announcer {
	return &announcer{send: send, wake: make(chan struct{}, 1), live: map[netip.Addr]uint64{}}
}

// start schedules n more announcements of a, interval apart, the first one
// interval from now; it replaces any schedule of a.
func (an *announcer) start(a netip.Addr, n int, interval time.Duration) {
	an.mu.Lock()
	defer an.mu.Unlock()
	an.gen++
	an.live[a] = an.gen
	heap.Push(&an.due, dueAnnouncement{addr: a, gen: an.gen, at: time.Now().Add(interval), left: n, interval: interval})
	select {
	case an.wake <- struct{}{}:
	default:
	}
}

// stop cancels a's remaining announcements.
func (an *announcer) stop(a netip.Addr) {
	an.mu.Lock()
	defer an.mu.Unlock()
	delete(an.live, a)
}

// run sends the announcements as they fall due until ctx is done.
func (an *announcer) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := an.sendDue(time.Now())
		if wait < 0 {
			wait = time.Hour // nothing scheduled: sleep until woken
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-an.wake:
		case <-t.C:
		}
	}
}

// sendDue sends every announcement due by now and returns the time until
// the next one, or -1 when none is scheduled.
func (an *announcer) sendDue(now time.Time) time.Duration {
	an.mu.Lock()
	defer an.mu.Unlock()
	for an.due.Len() > 0 {
		d := an.due[0]
		if an.live[d.addr] != d.gen {
			heap.Pop(&an.due) // stopped, or rescheduled
			continue
		}
		if d.at.After(now) {
			return d.at.Sub(now)
		}
		heap.Pop(&an.due)
		an.send(d.addr)
		if d.left--; d.left > 0 {
			d.at = d.at.Add(d.interval)
			heap.Push(&an.due, d)
		} else {
			delete(an.live, d.addr)
		}
	}
	return -1
}

// announceConfig is how the stack announces an address.
type announceConfig struct {
	count    int
	interval time.Duration
	refresh  time.Duration // 0: no periodic refresh
}

// startAnnounce sends the first announcement of a (gratuitous ARP or
// unsolicited Neighbor Advertisement) now and has the announcer send the
// others; releasing a or closing st stops them.
func (st *Stack) startAnnounce(a netip.Addr) {
	st.announcer.stop(a)
	st.announce(a)
	if cfg := st.garp; cfg.count > 1 {
		st.announcer.start(a, cfg.count-1, cfg.interval)
	}
}

// announce sends one announcement of a: gratuitous ARP for IPv4, an
// unsolicited Neighbor Advertisement for IPv6.
func (st *Stack) announce(a netip.Addr) {
	if a.Is6() {
		st.advertise(a)
		return
	}
	st.garpAnnounce(a)
}

// garpAnnounce sends one gratuitous ARP for a: an ARP request from the
// NIC's MAC to broadcast whose sender and target IP are both a (an RFC 5227
// ARP announcement; Linux updates an existing cache entry from it and
// creates none).
func (st *Stack) garpAnnounce(a netip.Addr) {
	b := make([]byte, header.ARPSize)
	h := header.ARP(b)
	h.SetIPv4OverEthernet()
	h.SetOp(header.ARPRequest)
	copy(h.HardwareAddressSender(), st.mac)
	copy(h.ProtocolAddressSender(), a.AsSlice())
	copy(h.ProtocolAddressTarget(), a.AsSlice())
	if err := st.s.WritePacketToRemote(nicID, header.EthernetBroadcastAddress, arp.ProtocolNumber, buffer.MakeWithData(b)); err != nil {
		st.log.Warn("gratuitous ARP", "ip", a, "err", err.String())
	}
}

// advertise sends one unsolicited Neighbor Advertisement for the IPv6
// address a (RFC 4861 section 7.2.6): from a to all-nodes ff02::1, hop
// limit 255, Override set and Solicited and Router clear, target a, with
// the NIC's MAC as the target link-layer address option. Linux moves an
// existing neighbour entry for a to that MAC (state STALE) and creates
// none, as with gratuitous ARP.
func (st *Stack) advertise(a netip.Addr) {
	b := neighborAdvert(ToAddr(a), st.mac)
	dst := header.EthernetAddressFromMulticastIPv6Address(header.IPv6AllNodesMulticastAddress)
	if err := st.s.WritePacketToRemote(nicID, dst, ipv6.ProtocolNumber, buffer.MakeWithData(b)); err != nil {
		st.log.Warn("unsolicited neighbor advertisement", "ip", a, "err", err.String())
	}
}

// neighborAdvert returns the IPv6 packet of an unsolicited Neighbor
// Advertisement of target at mac, to all-nodes.
func neighborAdvert(target tcpip.Address, mac tcpip.LinkAddress) []byte {
	opts := header.NDPOptionsSerializer{header.NDPTargetLinkLayerAddressOption(mac)}
	size := header.ICMPv6NeighborAdvertMinimumSize + opts.Length()
	b := make([]byte, header.IPv6MinimumSize+size)
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(size),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           target,
		DstAddr:           header.IPv6AllNodesMulticastAddress,
	})
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6NeighborAdvert)
	na := header.NDPNeighborAdvert(icmp.MessageBody())
	na.SetOverrideFlag(true)
	na.SetTargetAddress(target)
	na.Options().Serialize(opts)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp,
		Src:    target,
		Dst:    header.IPv6AllNodesMulticastAddress,
	}))
	return b
}

// runRefresh announces every held address again once per garp.refresh,
// until ctx is done: one address per step, the step being the interval
// divided by the number of addresses held when the round began, so that a
// large table is refreshed as a trickle, not a burst. An address released
// meanwhile is skipped; one added waits for the next round. A change of
// the setting (SetARP) starts a new round.
func (st *Stack) runRefresh(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var round []netip.Addr
	var step time.Duration
	for {
		st.mu.Lock()
		every := st.garp.refresh
		st.mu.Unlock()
		wait := time.Hour
		switch {
		case every <= 0:
			round = nil
		case len(round) == 0:
			round = st.Addrs()
			wait = every
			if len(round) > 0 {
				step = every / time.Duration(len(round))
				wait = step
			}
		default:
			wait = step
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-st.refreshWake:
			round = nil
			continue
		case <-t.C:
		}
		if len(round) == 0 {
			continue
		}
		a := round[0]
		round = round[1:]
		st.mu.Lock()
		if st.holdsLocked(a) {
			st.announce(a)
		}
		st.mu.Unlock()
	}
}

// holdsLocked reports whether the NIC holds a; st.mu must be held.
func (st *Stack) holdsLocked(a netip.Addr) bool {
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return st.s.CheckLocalAddress(nicID, proto, ToAddr(a)) != 0
}
