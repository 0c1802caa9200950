package nic

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultSnapLen is the snapshot length of a capture: frames longer than
// this are cut. It covers the largest segment the stack hands the link
// (gVisor GSO, 64 KiB).
const DefaultSnapLen = 65536

// pcapFlushDelay bounds how long a captured frame waits in the buffer
// before it is in the file.
const pcapFlushDelay = 200 * time.Millisecond

// Capture is a link endpoint that passes every frame through to the link
// it wraps and writes a copy, both ways, to a pcap file (the classic
// libpcap format, LINKTYPE_ETHERNET, microsecond timestamps) that tcpdump
// and Wireshark read. It is gVisor's sniffer idea with whole Ethernet
// frames: gVisor's own sniffer writes raw IP packets only, so it cannot
// show ARP.
//
// Frames are buffered and flushed at most 200 ms after they crossed, so
// the file can be read while the gateway runs; Stop flushes the rest. The
// caller owns the writer (creates the file, closes it after Stop).
// When a write fails (disk full), capturing stops with one log line and
// the data path goes on.
type Capture struct {
	nested.Endpoint
	snapLen uint32
	log     *slog.Logger

	// mu guards the following fields.
	mu     sync.Mutex
	w      *bufio.Writer
	timer  *time.Timer
	failed bool // a write failed: capture no more
	closed bool
}

var _ stack.LinkEndpoint = (*Capture)(nil)

// NewCapture wraps lower and writes the pcap file header to w at once.
// Frames are cut to snapLen bytes (0 means DefaultSnapLen). log receives
// a line if a write fails; nil discards.
func NewCapture(lower stack.LinkEndpoint, w io.Writer, snapLen uint32, log *slog.Logger) (*Capture, error) {
	if snapLen == 0 {
		snapLen = DefaultSnapLen
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Capture{snapLen: snapLen, log: log, w: bufio.NewWriterSize(w, 256<<10)}
	c.Endpoint.Init(lower, c)
	// The global header: magic, version 2.4, GMT, accuracy 0, snaplen,
	// LINKTYPE_ETHERNET (1).
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], snapLen)
	binary.LittleEndian.PutUint32(h[20:], 1)
	if _, err := c.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	return c, nil
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: it records a
// frame that the link received, then hands it to the stack.
func (c *Capture) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.record(pkt)
	c.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// WritePackets implements stack.LinkEndpoint: it records the frames that
// the stack sends, then hands them to the link.
func (c *Capture) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		c.record(pkt)
	}
	return c.Endpoint.WritePackets(pkts)
}

// record writes one frame: its Ethernet header and everything after it.
func (c *Capture) record(pkt *stack.PacketBuffer) {
	now := time.Now()
	buf := pkt.ToBuffer()
	defer buf.Release()
	// A virtio-net header (host GSO) is not part of the frame.
	buf.TrimFront(int64(len(pkt.VirtioNetHeader().Slice())))
	size := buf.Size()
	capLen := min(size, int64(c.snapLen))
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(now.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(now.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(h[12:], uint32(size))

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.failed {
		return
	}
	_, err := c.w.Write(h[:])
	if err == nil {
		buf.SubApply(0, int(capLen), func(v *buffer.View) {
			if err == nil {
				_, err = c.w.Write(v.AsSlice())
			}
		})
	}
	if err != nil {
		c.failLocked(err)
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(pcapFlushDelay, c.flush)
	}
}

// flush writes the buffered frames to the file.
func (c *Capture) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	if c.closed || c.failed {
		return
	}
	if err := c.w.Flush(); err != nil {
		c.failLocked(err)
	}
}

// failLocked stops capturing after a write error; c.mu is held.
func (c *Capture) failLocked(err error) {
	c.failed = true
	c.log.Error("pcap: write failed, capture stopped (the gateway goes on)", "err", err)
}

// Stop writes what is buffered to the writer. Call it after the stack has
// stopped; frames that cross later are not recorded. It is idempotent.
// (Close is the link endpoint's, which the stack calls.)
func (c *Capture) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.failed {
		return nil
	}
	return c.w.Flush()
}
