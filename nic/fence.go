package nic

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Gate says whether the gateway may answer for its addresses at this
// instant. Open is called for every frame that crosses a Fence, from the
// link's receive goroutine and from every goroutine that sends, so it must
// be cheap and take no lock that a slow path holds (package cluster's
// answer is one atomic load and a monotonic clock reading).
type Gate interface {
	Open() bool
}

// Fence is a link endpoint that passes every frame through to the link it
// wraps while its Gate is open, and drops every ARP, IPv4 and IPv6 frame,
// both ways, while the gate is shut: a gateway that may no longer hold its
// addresses (its cluster lease may have ended) neither answers ARP or NDP
// for them nor sends or accepts a packet from or to them.
//
// The decision is taken per frame, at the moment the frame crosses, not by
// a goroutine that must first notice something: a garbage collector pause
// or a SIGSTOP that outlasts the gate's deadline cannot let a frame queued
// before it through afterwards. Frames of other protocols (none that the
// stack speaks) pass.
type Fence struct {
	nested.Endpoint
	gate Gate

	droppedIn  atomic.Uint64
	droppedOut atomic.Uint64
}

var _ stack.LinkEndpoint = (*Fence)(nil)

// NewFence wraps lower with a fence controlled by gate.
func NewFence(lower stack.LinkEndpoint, gate Gate) *Fence {
	f := &Fence{gate: gate}
	f.Endpoint.Init(lower, f)
	return f
}

// fenced reports whether a frame of protocol p is one the fence stops.
func fenced(p tcpip.NetworkProtocolNumber) bool {
	switch p {
	case header.ARPProtocolNumber, header.IPv4ProtocolNumber, header.IPv6ProtocolNumber:
		return true
	}
	return false
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: it hands a
// received frame to the stack unless the gate is shut.
func (f *Fence) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if fenced(protocol) && !f.gate.Open() {
		f.droppedIn.Add(1)
		return
	}
	f.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// WritePackets implements stack.LinkEndpoint: it hands the stack's frames
// to the link, leaving out those that the shut gate stops. Dropped frames
// count as written: to the stack they are lost on the wire.
func (f *Fence) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	if len(all) == 0 || f.gate.Open() {
		return f.Endpoint.WritePackets(pkts)
	}
	var pass stack.PacketBufferList
	dropped := 0
	for _, pkt := range all {
		if fenced(pkt.NetworkProtocolNumber) {
			dropped++
			continue
		}
		pass.PushBack(pkt)
	}
	f.droppedOut.Add(uint64(dropped))
	if pass.Len() == 0 {
		return dropped, nil
	}
	n, err := f.Endpoint.WritePackets(pass)
	return n + dropped, err
}

// Dropped returns how many frames the fence has dropped: received ones
// (never handed to the stack) and sent ones (never handed to the link).
func (f *Fence) Dropped() (in, out uint64) {
	return f.droppedIn.Load(), f.droppedOut.Load()
}
