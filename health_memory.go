package instancelock

// The memoryUsage of the health response.

import (
	"runtime/metrics"
	"time"
)

// memorySampleInterval is how long one sample of memoryUsage (runtime/metrics
// and the resident set size) is reused. Reading the heap statistics costs
// about as much as the rest of a response, and RSS costs system calls.
const memorySampleInterval = time.Second

// memoryMetrics are read from runtime/metrics, which, unlike
// runtime.ReadMemStats, does not stop the world.
var memoryMetrics = [...]string{
	"/memory/classes/heap/objects:bytes",  // heapUsed
	"/memory/classes/heap/unused:bytes",   // + unused + free = heapTotal
	"/memory/classes/heap/free:bytes",     //
	"/memory/classes/heap/released:bytes", // returned to the OS: neither heap nor external
	"/memory/classes/total:bytes",         // − the above = external (stacks, runtime metadata, …)
}

// memorySample is one reading of memoryUsage.
type memorySample struct {
	at                            time.Time
	heapUsed, heapTotal, external uint64
	rss                           uint64
	hasRSS                        bool
}

// memory returns the current sample, refreshing it in this request if it
// is older than memorySampleInterval and no other request is doing so.
func (h *Health) memory(now time.Time) *memorySample {
	m := h.mem.Load()
	if now.Sub(m.at) < memorySampleInterval || !h.memBusy.CompareAndSwap(false, true) {
		return m
	}
	defer h.memBusy.Store(false)
	m = h.sampleMemory(now)
	h.mem.Store(m)
	return m
}

// sampleMemory reads the memory statistics; the caller owns memReader.
func (h *Health) sampleMemory(now time.Time) *memorySample {
	metrics.Read(h.memReader)
	var v [len(memoryMetrics)]uint64
	for i, s := range h.memReader {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	heapTotal := v[0] + v[1] + v[2]
	m := &memorySample{at: now, heapUsed: v[0], heapTotal: heapTotal}
	if v[4] > heapTotal+v[3] {
		m.external = v[4] - heapTotal - v[3]
	}
	m.rss, m.hasRSS = readRSS()
	return m
}
