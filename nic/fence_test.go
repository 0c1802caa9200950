package nic_test

import (
	"sync/atomic"
	"testing"

	"github.com/vipmux/vipmux/nic"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

type gate struct{ open atomic.Bool }

func (g *gate) Open() bool { return g.open.Load() }

// counter is a NetworkDispatcher that counts the frames delivered to it.
type counter struct{ n atomic.Int64 }

func (c *counter) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) { c.n.Add(1) }
func (c *counter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

func frame(proto tcpip.NetworkProtocolNumber) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 60))})
	pkt.NetworkProtocolNumber = proto
	return pkt
}

// TestFence checks that frames of ARP, IPv4 and IPv6 cross the fence both
// ways while the gate is open and none does while it is shut.
func TestFence(t *testing.T) {
	tests := []struct {
		name     string
		open     bool
		proto    tcpip.NetworkProtocolNumber
		wantPass bool
	}{
		{"open arp", true, header.ARPProtocolNumber, true},
		{"open ipv4", true, header.IPv4ProtocolNumber, true},
		{"open ipv6", true, header.IPv6ProtocolNumber, true},
		{"shut arp", false, header.ARPProtocolNumber, false},
		{"shut ipv4", false, header.IPv4ProtocolNumber, false},
		{"shut ipv6", false, header.IPv6ProtocolNumber, false},
		{"shut other protocol", false, 0x88cc, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire := channel.New(8, 1500, "\x02\x00\x00\x00\x00\x01")
			g := &gate{}
			g.open.Store(tc.open)
			f := nic.NewFence(wire, g)
			up := &counter{}
			f.Attach(up)
			defer f.Attach(nil)

			in := frame(tc.proto)
			wire.InjectInbound(tc.proto, in)
			in.DecRef()
			if got := up.n.Load() == 1; got != tc.wantPass {
				t.Errorf("inbound frame delivered = %v, want %v", got, tc.wantPass)
			}

			var pkts stack.PacketBufferList
			pkts.PushBack(frame(tc.proto))
			n, err := f.WritePackets(pkts)
			pkts.Reset()
			if err != nil || n != 1 {
				t.Errorf("WritePackets = %d, %v; want 1, nil (a dropped frame counts as written)", n, err)
			}
			out := wire.Read()
			if got := out != nil; got != tc.wantPass {
				t.Errorf("outbound frame on the wire = %v, want %v", got, tc.wantPass)
			}
			if out != nil {
				out.DecRef()
			}
			in1, out1 := f.Dropped()
			wantDropped := uint64(0)
			if !tc.wantPass {
				wantDropped = 1
			}
			if in1 != wantDropped || out1 != wantDropped {
				t.Errorf("Dropped() = %d, %d; want %d, %d", in1, out1, wantDropped, wantDropped)
			}
		})
	}
}
