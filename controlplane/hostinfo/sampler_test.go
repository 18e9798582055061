package hostinfo

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeHost is a scripted set of sources with a manual clock.
type fakeHost struct {
	mu     sync.Mutex
	now    time.Time
	cpu    []cpuTimes
	calls  int
	slept  []time.Duration
	cpuErr error
	mtuErr error
}

func (f *fakeHost) sampler() *Sampler {
	return &Sampler{src: sources{
		cpu: func() (cpuTimes, error) {
			if f.cpuErr != nil {
				return cpuTimes{}, f.cpuErr
			}
			c := f.cpu[min(f.calls, len(f.cpu)-1)]
			f.calls++
			return c, nil
		},
		mem:     func() (memInfo, error) { return memInfo{totalKB: 4 << 20, availableKB: 3 << 20}, nil },
		loadavg: func() ([3]float64, error) { return [3]float64{0.5, 0.25, 0.125}, nil },
		mtu: func() (int, error) {
			if f.mtuErr != nil {
				return 0, f.mtuErr
			}
			return 1500, nil
		},
		synced: func() (bool, error) { return true, nil },
		now: func() time.Time {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.now
		},
		sleep: func(d time.Duration) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.slept = append(f.slept, d)
			f.now = f.now.Add(d)
		},
	}}
}

func (f *fakeHost) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func TestSamplerCPULoadDeltas(t *testing.T) {
	f := &fakeHost{now: time.Unix(1000, 0), cpu: []cpuTimes{
		{busy: 100, total: 1000},
		{busy: 125, total: 1100}, // first window: 25/100
		{busy: 205, total: 1200}, // 80/100
		{busy: 999, total: 9999}, // must not be read: too soon
		{busy: 205, total: 1200}, // no ticks passed: keep last value
	}}
	s := f.sampler()

	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.CPULoad != 0.25 {
		t.Fatalf("first load = %v, want 0.25", snap.CPULoad)
	}
	if len(f.slept) != 1 || f.slept[0] != FirstSampleWindow {
		t.Fatalf("first call slept %v, want one %v", f.slept, FirstSampleWindow)
	}
	want := Snapshot{CPULoad: 0.25, MemoryUsedMB: 1024, MemoryTotalMB: 4096, LoadAvg: [3]float64{0.5, 0.25, 0.125}, MTU: 1500, TimeSynced: true}
	if snap != want {
		t.Fatalf("snapshot = %+v, want %+v", snap, want)
	}

	f.advance(time.Second)
	if snap, _ = s.Snapshot(); snap.CPULoad != 0.8 {
		t.Fatalf("second load = %v, want 0.8", snap.CPULoad)
	}
	f.advance(FirstSampleWindow / 2)
	if snap, _ = s.Snapshot(); snap.CPULoad != 0.8 || f.calls != 3 {
		t.Fatalf("call inside the window: load %v after %d reads, want cached 0.8 after 3", snap.CPULoad, f.calls)
	}
	f.calls = 4
	f.advance(time.Second)
	if snap, _ = s.Snapshot(); snap.CPULoad != 0.8 {
		t.Fatalf("no ticks elapsed: load %v, want last value 0.8", snap.CPULoad)
	}
	if len(f.slept) != 1 {
		t.Fatalf("later calls slept: %v", f.slept)
	}
}

func TestSamplerPartialFailure(t *testing.T) {
	boom := errors.New("boom")
	f := &fakeHost{now: time.Unix(0, 0), cpu: []cpuTimes{{1, 2}}, cpuErr: boom, mtuErr: ErrNoDefaultRoute}
	snap, err := f.sampler().Snapshot()
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the cpu failure", err)
	}
	if errors.Is(err, ErrNoDefaultRoute) {
		t.Fatal("a missing default route must not be an error")
	}
	if snap.MemoryTotalMB != 4096 || snap.MTU != 0 || !snap.TimeSynced {
		t.Fatalf("other values lost: %+v", snap)
	}

	f = &fakeHost{now: time.Unix(0, 0), cpu: []cpuTimes{{1, 2}}, mtuErr: boom}
	if _, err := f.sampler().Snapshot(); !errors.Is(err, boom) {
		t.Fatalf("mtu failure not reported: %v", err)
	}
}

func TestSamplerConcurrent(t *testing.T) {
	f := &fakeHost{now: time.Unix(0, 0), cpu: []cpuTimes{{10, 100}, {20, 200}}}
	s := f.sampler()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if snap, err := s.Snapshot(); err != nil || snap.CPULoad != 0.1 {
				t.Errorf("snapshot %+v, %v", snap, err)
			}
		})
	}
	wg.Wait()
	if len(f.slept) != 1 {
		t.Fatalf("first-sample sleep taken %d times", len(f.slept))
	}
}
