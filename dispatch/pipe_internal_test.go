package dispatch

import (
	"bytes"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
)

// scriptedConn is a net.Conn whose reads return the given sizes in turn,
// then EOF; it records the size of every buffer it was asked to fill.
type scriptedConn struct {
	net.Conn // nil: only Read and Write are called
	reads    []int
	offered  []int
	next     byte
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.offered = append(c.offered, len(p))
	if len(c.reads) == 0 {
		return 0, io.EOF
	}
	n := min(c.reads[0], len(p))
	c.reads = c.reads[1:]
	for i := range n {
		p[i] = c.next
		c.next++
	}
	return n, nil
}

// sink is a net.Conn that keeps what is written to it.
type sink struct {
	net.Conn // nil: only Write is called
	buf      bytes.Buffer
}

func (s *sink) Write(p []byte) (int, error) { return s.buf.Write(p) }

// pipe reads into a small buffer, takes a large one while reads fill the
// buffer and gives it back when a read returns less than a small buffer's
// worth; every byte arrives, in order.
func TestPipeBuffers(t *testing.T) {
	const s, l = smallBufferSize, largeBufferSize
	tests := []struct {
		name        string
		reads       []int
		wantOffered []int
	}{
		{"idle request and answer", []int{100, 20}, []int{s, s, s}},
		{"bulk", []int{s, l, l, l}, []int{s, l, l, l, l}},
		{"bulk then small", []int{s, l, 100, 200}, []int{s, l, l, s, s}},
		{"large read below the small size", []int{s, s - 1, s}, []int{s, l, s, l}},
		{"bulk resumes", []int{s, 10, s, l}, []int{s, l, s, l, l}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &scriptedConn{reads: slices.Clone(tc.reads)}
			dst := &sink{}
			var total atomic.Uint64
			var eofs atomic.Int32
			var last, clock atomic.Int64
			n, err := pipe(dst, src, &total, &last, &clock, &eofs)
			if err != nil {
				t.Fatalf("pipe: %v", err)
			}
			want := 0
			for _, r := range tc.reads {
				want += r
			}
			if n != uint64(want) || total.Load() != uint64(want) || dst.buf.Len() != want {
				t.Errorf("pipe copied %d (total %d, written %d), want %d", n, total.Load(), dst.buf.Len(), want)
			}
			for i, b := range dst.buf.Bytes() {
				if b != byte(i) {
					t.Fatalf("byte %d = %d, want %d: out of order", i, b, byte(i))
				}
			}
			if !slices.Equal(src.offered, tc.wantOffered) {
				t.Errorf("buffer sizes offered to Read = %v, want %v", src.offered, tc.wantOffered)
			}
		})
	}
}

// halfSink records whether it was half-closed.
type halfSink struct {
	sink
	closedWrite bool
}

func (s *halfSink) CloseWrite() error { s.closedWrite = true; return nil }

// pipe half-closes its destination at the first EOF of a connection, and
// not at the second: the other side's FIN has come already and splice
// closes both sides at once.
func TestPipeHalfClose(t *testing.T) {
	var eofs atomic.Int32
	for i, want := range []bool{true, false} {
		dst := &halfSink{}
		var total atomic.Uint64
		var last, clock atomic.Int64
		if _, err := pipe(dst, &scriptedConn{reads: []int{10}}, &total, &last, &clock, &eofs); err != nil {
			t.Fatalf("pipe %d: %v", i+1, err)
		}
		if dst.closedWrite != want {
			t.Errorf("EOF %d of the connection: CloseWrite called = %v, want %v", i+1, dst.closedWrite, want)
		}
	}
}
