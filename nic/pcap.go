package nic

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
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
// it wraps and writes a copy, both ways, to each of its recordings: pcap
// streams (the classic libpcap format, LINKTYPE_ETHERNET, microsecond
// timestamps) that tcpdump and Wireshark read. It is gVisor's sniffer idea
// with whole Ethernet frames: gVisor's own sniffer writes raw IP packets
// only, so it cannot show ARP.
//
// Recordings start and stop while the gateway runs (Record): serve
// --pcap's file for the whole run, vipmux capture's stream for a while.
// With none, a frame costs one atomic load, so the gateway keeps a
// Capture on its front link at all times.
//
// Frames are buffered and flushed at most 200 ms after they crossed, so a
// file or stream can be read while the gateway runs; stopping a recording
// flushes the rest. When a write fails (disk full, a client gone), that
// recording stops with one log line and the data path goes on.
type Capture struct {
	nested.Endpoint
	log *slog.Logger

	// recs are the running recordings, replaced (never changed) under mu;
	// nil when there are none.
	recs atomic.Pointer[[]*Recording]
	// mu serializes changes of recs and guards the following field.
	mu     sync.Mutex
	closed bool

	// first is the recording that NewCapture started, stopped by Stop.
	first *Recording
}

var _ stack.LinkEndpoint = (*Capture)(nil)

// NewCapture wraps lower. If w is not nil, it starts recording every
// frame to w at once (see Record; Stop ends it). Frames are cut to
// snapLen bytes (0 means DefaultSnapLen). log receives a line when a
// write fails; nil discards.
func NewCapture(lower stack.LinkEndpoint, w io.Writer, snapLen uint32, log *slog.Logger) (*Capture, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Capture{log: log}
	c.Endpoint.Init(lower, c)
	if w != nil {
		r, err := c.Record(w, snapLen, nil)
		if err != nil {
			return nil, err
		}
		c.first = r
	}
	return c, nil
}

// Match says whether a frame (from its Ethernet header on, possibly cut
// short) is to be recorded; nil matches every frame. See ParseFilter.
type Match func(frame []byte) bool

// Record starts copying the frames that match (nil: all) to w: it writes
// the pcap file header at once, then one record per frame, cut to snapLen
// bytes (0 means DefaultSnapLen). The caller owns w; it must not be used
// by anyone else until the recording's Stop has returned.
func (c *Capture) Record(w io.Writer, snapLen uint32, match Match) (*Recording, error) {
	if snapLen == 0 {
		snapLen = DefaultSnapLen
	}
	r := &Recording{c: c, snapLen: snapLen, match: match, w: bufio.NewWriterSize(w, 256<<10)}
	// The global header: magic, version 2.4, GMT, accuracy 0, snaplen,
	// LINKTYPE_ETHERNET (1).
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], snapLen)
	binary.LittleEndian.PutUint32(h[20:], 1)
	if _, err := r.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	if err := r.w.Flush(); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("pcap: %w", ErrCaptureStopped)
	}
	recs := []*Recording{r}
	if cur := c.recs.Load(); cur != nil {
		recs = append(slices.Clone(*cur), r)
	}
	c.recs.Store(&recs)
	return r, nil
}

// ErrCaptureStopped is returned by Record after Stop.
var ErrCaptureStopped = errors.New("capture stopped")

// remove takes r out of the running recordings.
func (c *Capture) remove(r *Recording) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.recs.Load()
	if cur == nil {
		return
	}
	recs := slices.DeleteFunc(slices.Clone(*cur), func(x *Recording) bool { return x == r })
	if len(recs) == 0 {
		c.recs.Store(nil)
		return
	}
	c.recs.Store(&recs)
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: it records a
// frame that the link received, then hands it to the stack.
func (c *Capture) DeliverNetworkPacket(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if recs := c.recs.Load(); recs != nil {
		c.record(*recs, pkt)
	}
	c.Endpoint.DeliverNetworkPacket(protocol, pkt)
}

// WritePackets implements stack.LinkEndpoint: it records the frames that
// the stack sends, then hands them to the link.
func (c *Capture) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if recs := c.recs.Load(); recs != nil {
		for _, pkt := range pkts.AsSlice() {
			c.record(*recs, pkt)
		}
	}
	return c.Endpoint.WritePackets(pkts)
}

// matchPrefix is how much of a frame a Match sees: the Ethernet header,
// an IPv6 header and a TCP or UDP header's ports, with room to spare.
const matchPrefix = 128

// record writes one frame to every recording whose Match takes it.
func (c *Capture) record(recs []*Recording, pkt *stack.PacketBuffer) {
	now := time.Now()
	buf := pkt.ToBuffer()
	defer buf.Release()
	// A virtio-net header (host GSO) is not part of the frame.
	buf.TrimFront(int64(len(pkt.VirtioNetHeader().Slice())))
	var head []byte
	for _, r := range recs {
		if r.match == nil {
			r.write(now, &buf)
			continue
		}
		if head == nil {
			head = make([]byte, 0, matchPrefix)
			buf.SubApply(0, int(min(buf.Size(), matchPrefix)), func(v *buffer.View) { head = append(head, v.AsSlice()...) })
		}
		if r.match(head) {
			r.write(now, &buf)
		}
	}
}

// Stop stops every recording, flushing what is buffered, and refuses new
// ones. Call it after the stack has stopped; frames that cross later are
// not recorded. It is idempotent and returns the error of the recording
// that NewCapture started, if any. (Close is the link endpoint's, which
// the stack calls.)
func (c *Capture) Stop() error {
	c.mu.Lock()
	c.closed = true
	var recs []*Recording
	if cur := c.recs.Load(); cur != nil {
		recs = *cur
	}
	c.mu.Unlock()
	var err error
	for _, r := range recs {
		if rerr := r.Stop(); r == c.first {
			err = rerr
		}
	}
	return err
}

// Recording is one pcap stream of a Capture (Capture.Record).
type Recording struct {
	c       *Capture
	snapLen uint32
	match   Match

	// mu guards the following fields.
	mu     sync.Mutex
	w      *bufio.Writer
	timer  *time.Timer
	frames uint64
	failed bool // a write failed: record no more
	closed bool
}

// Frames returns how many frames r has recorded.
func (r *Recording) Frames() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames
}

// write writes one record: buf's first snapLen bytes.
func (r *Recording) write(now time.Time, buf *buffer.Buffer) {
	size := buf.Size()
	capLen := min(size, int64(r.snapLen))
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(now.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(now.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(h[12:], uint32(size))

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.failed {
		return
	}
	_, err := r.w.Write(h[:])
	if err == nil {
		buf.SubApply(0, int(capLen), func(v *buffer.View) {
			if err == nil {
				_, err = r.w.Write(v.AsSlice())
			}
		})
	}
	if err != nil {
		r.failLocked(err)
		return
	}
	r.frames++
	if r.timer == nil {
		r.timer = time.AfterFunc(pcapFlushDelay, r.flush)
	}
}

// flush writes the buffered frames to the writer.
func (r *Recording) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if r.closed || r.failed {
		return
	}
	if err := r.w.Flush(); err != nil {
		r.failLocked(err)
	}
}

// failLocked stops recording after a write error; r.mu is held.
func (r *Recording) failLocked(err error) {
	r.failed = true
	r.log().Error("pcap: write failed, capture stopped (the gateway goes on)", "err", err)
}

func (r *Recording) log() *slog.Logger { return r.c.log }

// Stop ends the recording: no frame is written after it returns, and
// what was buffered is flushed to the writer. It is idempotent; it returns
// the error of that last flush.
func (r *Recording) Stop() error {
	r.c.remove(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.failed {
		return nil
	}
	return r.w.Flush()
}
