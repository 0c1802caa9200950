package control

import (
	"net"
	"testing"
	"time"
)

// TestLimitListener: at most n connections are accepted at once; closing
// one lets the next in; closing the listener ends a blocked Accept.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(inner, 2)
	defer ln.Close()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var got []net.Conn
	for range 2 {
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("Accept within the limit: %v", err)
		}
		got = append(got, c)
	}
	third := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(third)
			return
		}
		third <- c
	}()
	select {
	case <-third:
		t.Fatal("a third connection was accepted while 2 were open with a limit of 2")
	case <-time.After(100 * time.Millisecond):
	}
	got[0].Close()
	got[0].Close() // a second Close frees nothing more
	c, ok := <-third
	if !ok {
		t.Fatal("Accept after a connection closed: error, want the third connection")
	}
	c.Close()

	// An Accept blocked on the limit (got[1] and a fourth connection
	// open) ends when the listener is closed.
	d, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fourth, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept within the limit: %v", err)
	}
	defer fourth.Close()
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	ln.Close()
	if err := <-done; err == nil {
		t.Error("Accept blocked on the limit returned no error after Close")
	}
}
