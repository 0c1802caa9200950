package nic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// syncBuffer is a bytes.Buffer safe for the capture's flush timer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// pcapRecord is one record of a pcap file.
type pcapRecord struct {
	CapLen, OrigLen uint32
	Data            []byte
}

// readPcap parses a classic pcap file (little-endian, as NewCapture
// writes it): the header's snaplen and link type, and the records.
func readPcap(t *testing.T, b []byte) (snapLen, linkType uint32, recs []pcapRecord) {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("pcap file of %d bytes, want a 24-byte header at least", len(b))
	}
	le := binary.LittleEndian
	if magic := le.Uint32(b); magic != 0xa1b2c3d4 {
		t.Fatalf("pcap magic %#x, want 0xa1b2c3d4", magic)
	}
	if maj, min := le.Uint16(b[4:]), le.Uint16(b[6:]); maj != 2 || min != 4 {
		t.Errorf("pcap version %d.%d, want 2.4", maj, min)
	}
	snapLen, linkType = le.Uint32(b[16:]), le.Uint32(b[20:])
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("truncated record header: %d bytes", len(b))
		}
		r := pcapRecord{CapLen: le.Uint32(b[8:]), OrigLen: le.Uint32(b[12:])}
		if uint32(len(b)-16) < r.CapLen {
			t.Fatalf("truncated record: %d bytes, caplen %d", len(b)-16, r.CapLen)
		}
		r.Data = b[16 : 16+r.CapLen]
		recs = append(recs, r)
		b = b[16+r.CapLen:]
	}
	return snapLen, linkType, recs
}

var (
	ourMAC  = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	peerMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
)

// frame is an Ethernet frame from peerMAC to ourMAC with an IPv4 type and
// n bytes of payload.
func frame(n int) []byte {
	b := make([]byte, header.EthernetMinimumSize+n)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: peerMAC, DstAddr: ourMAC, Type: header.IPv4ProtocolNumber})
	for i := range n {
		b[header.EthernetMinimumSize+i] = byte(i)
	}
	return b
}

// dispatcher records the packets the capture hands up.
type dispatcher struct{ n int }

func (d *dispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) { d.n++ }
func (d *dispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// TestCapture: frames both ways are written whole (Ethernet header
// included), cut at the snapshot length, flushed without Stop within the
// flush delay, and passed on unchanged.
func TestCapture(t *testing.T) {
	wire := channel.New(8, 1500, ourMAC)
	link := ethernet.New(wire)
	var out syncBuffer
	c, err := NewCapture(link, &out, 100, nil)
	if err != nil {
		t.Fatalf("NewCapture: %v", err)
	}
	var d dispatcher
	c.Attach(&d)

	// Received: a frame the wire delivers.
	in := frame(40)
	wire.InjectInbound(0, stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(in)}))
	if d.n != 1 {
		t.Errorf("frames handed up = %d, want 1", d.n)
	}
	// Sent: a 200-byte payload that the link frames; cut at 100.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: int(c.MaxHeaderLength()), Payload: buffer.MakeWithData(bytes.Repeat([]byte{7}, 200))})
	pkt.EgressRoute.LocalLinkAddress, pkt.EgressRoute.RemoteLinkAddress = ourMAC, peerMAC
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	c.AddHeader(pkt)
	var pkts stack.PacketBufferList
	pkts.PushBack(pkt)
	if n, err := c.WritePackets(pkts); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v; want 1, nil", n, err)
	}
	pkts.DecRef()
	if got := wire.Drain(); got != 1 {
		t.Errorf("frames on the wire = %d, want 1", got)
	}

	// Flushed by the timer, before Stop.
	deadline := time.Now().Add(5 * time.Second)
	for len(out.Bytes()) == 24 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	snap, lt, recs := readPcap(t, out.Bytes())
	if snap != 100 || lt != 1 {
		t.Errorf("pcap header snaplen %d linktype %d, want 100 and 1 (Ethernet)", snap, lt)
	}
	// Destination, source, type, then the payload up to the snaplen.
	sent := append([]byte(peerMAC+ourMAC), 0x08, 0x00)
	sent = append(sent, bytes.Repeat([]byte{7}, 100-len(sent))...)
	want := []pcapRecord{
		{CapLen: uint32(len(in)), OrigLen: uint32(len(in)), Data: in},
		{CapLen: 100, OrigLen: 214, Data: sent},
	}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("pcap records before Stop (-want +got):\n%s", diff)
	}

	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// After Stop nothing more is written, and frames still pass.
	wire.InjectInbound(0, stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame(10))}))
	if _, _, recs := readPcap(t, out.Bytes()); len(recs) != 2 || d.n != 2 {
		t.Errorf("after Stop: %d records (want 2), %d frames handed up (want 2)", len(recs), d.n)
	}
	c.Attach(nil)
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

// TestCaptureWriteError: a capture whose writer fails stops capturing and
// lets frames pass.
func TestCaptureWriteError(t *testing.T) {
	if _, err := NewCapture(channel.New(1, 1500, ourMAC), &failWriter{}, 0, nil); err == nil {
		t.Errorf("NewCapture on a failing writer = nil error, want one")
	}
	wire := channel.New(8, 1500, ourMAC)
	c, err := NewCapture(ethernet.New(wire), &failWriter{n: 1}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d dispatcher
	c.Attach(&d)
	// More than the 256 KiB buffer: the writer fails while recording.
	for range 5 {
		wire.InjectInbound(0, stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame(60000))}))
	}
	if d.n != 5 {
		t.Errorf("frames handed up after a write error = %d, want 5", d.n)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop after a write error = %v, want nil (reported once in the log)", err)
	}
	c.Attach(nil)
}
