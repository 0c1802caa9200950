// Package e2e holds the end-to-end tests of vipmux: they build the real
// binary and run it in network namespaces that each test creates, with kernel
// clients (curl, tcpclient) and kernel servers (namesrv), addresses from
// 198.18.0.0/15 only.
//
// Run as root:
//
//	go test ./e2e/ -v -count=1
//
// Set VIPMUX_BIN to test a prebuilt binary. Without root (or without the ip
// command) the tests skip, except when CI=true, where a skip is a failure.
package e2e
