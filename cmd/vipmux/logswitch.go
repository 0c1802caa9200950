package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/vipmux/vipmux/config"
)

// logSwitch is the gateway's logger whose level and format a reload
// changes while every package keeps the *slog.Logger it was given: the
// level is a slog.LevelVar, the format a handler swapped atomically.
type logSwitch struct {
	w     io.Writer
	level slog.LevelVar
	// base is the text or JSON handler that writes to w.
	base atomic.Pointer[slog.Handler]
	// Logger is the logger to hand out.
	Logger *slog.Logger
}

// newLogSwitch returns the process's logger set up from cfg, which has
// been validated.
func newLogSwitch(cfg config.Log, w io.Writer) *logSwitch {
	ls := &logSwitch{w: w}
	ls.Set(cfg)
	ls.Logger = slog.New(&switchHandler{ls: ls})
	return ls
}

// Set makes cfg's level and format apply to every line logged from now
// on; cfg has been validated.
func (ls *logSwitch) Set(cfg config.Log) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.Level)))
	ls.level.Set(level)
	opts := &slog.HandlerOptions{Level: &ls.level}
	var h slog.Handler = slog.NewTextHandler(ls.w, opts)
	if cfg.Format == "json" {
		h = slog.NewJSONHandler(ls.w, opts)
	}
	ls.base.Store(&h)
}

// switchHandler is a slog.Handler that writes through the logSwitch's
// current base handler, with the attributes and groups of the loggers
// derived from it (Logger.With, WithGroup) applied to whichever base is
// current.
type switchHandler struct {
	ls *logSwitch
	// with are the WithAttrs and WithGroup calls that made this handler,
	// in order.
	with []func(slog.Handler) slog.Handler
	// cache is the base handler of the last record with with applied.
	cache atomic.Pointer[derived]
}

// derived is a base handler and the handler that with made of it.
type derived struct {
	base *slog.Handler
	h    slog.Handler
}

// Enabled implements slog.Handler.
func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.ls.level.Level()
}

// Handle implements slog.Handler.
func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

// current returns the base handler with h's attributes and groups.
func (h *switchHandler) current() slog.Handler {
	base := h.ls.base.Load()
	if len(h.with) == 0 {
		return *base
	}
	if d := h.cache.Load(); d != nil && d.base == base {
		return d.h
	}
	out := *base
	for _, fn := range h.with {
		out = fn(out)
	}
	h.cache.Store(&derived{base: base, h: out})
	return out
}

// WithAttrs implements slog.Handler.
func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.derive(func(b slog.Handler) slog.Handler { return b.WithAttrs(attrs) })
}

// WithGroup implements slog.Handler.
func (h *switchHandler) WithGroup(name string) slog.Handler {
	return h.derive(func(b slog.Handler) slog.Handler { return b.WithGroup(name) })
}

func (h *switchHandler) derive(fn func(slog.Handler) slog.Handler) *switchHandler {
	return &switchHandler{ls: h.ls, with: append(slices.Clip(h.with), fn)}
}
