package main

import (
	"os"
	"runtime/debug"
)

// gcPercent is the garbage collector's target (GOGC) of `serve`: the data
// path allocates a buffer per packet, and a heap allowed to grow 4x
// between collections cut the keep-alive p99 from 1.4-2.4x HAProxy's to
// 0.9-1.3x without raising memory per idle connection (32 vs 33 KiB at
// 10,000 connections; bench/results/TUNING.md).
const gcPercent = 400

// setGCPercent applies gcPercent unless the operator set GOGC.
func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
