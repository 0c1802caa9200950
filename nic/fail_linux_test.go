package nic

import (
	"errors"
	"net"
	"testing"
)

// TestLinkFail: Done is closed and Err set by the first Fail only; a link
// that has not failed has an open Done and no Err.
func TestLinkFail(t *testing.T) {
	l := &Link{Name: "test0"}
	select {
	case <-l.Done():
		t.Fatalf("Done() of a working link is closed")
	default:
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err() of a working link = %v, want nil", err)
	}
	first, second := errors.New("front interface test0 is gone"), errors.New("later")
	l.Fail(first)
	l.Fail(second)
	select {
	case <-l.Done():
	default:
		t.Fatalf("Done() after Fail is open, want closed")
	}
	if err := l.Err(); !errors.Is(err, first) {
		t.Errorf("Err() after two Fails = %v, want the first, %v", err, first)
	}
}

// TestLinkGone: linkGone tells an interface that exists (loopback) from
// one that does not.
func TestLinkGone(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no loopback interface: %v", err)
	}
	tests := []struct {
		name     string
		ifindex  int
		wantGone bool
	}{
		{name: "loopback", ifindex: lo.Index},
		{name: "no such index", ifindex: 1<<31 - 1, wantGone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := linkGone(tc.ifindex); (err != nil) != tc.wantGone {
				t.Errorf("linkGone(%d) = %v, want gone %v", tc.ifindex, err, tc.wantGone)
			}
		})
	}
}
