// Package filewatch notices that a file's content changed, however it
// changed: an edit in place, an atomic rename over it, or the swap of a
// Kubernetes ConfigMap or Secret mount, where the kubelet writes the new
// version into a fresh timestamped directory and renames the `..data`
// symlink onto it (the file itself is a symlink through `..data`, so its
// inode, mtime and even its own link never change).
//
// It polls: every interval it reads the file through all its symlinks and
// compares a SHA-256 of the content with the previous one. Inotify on the
// file would miss the ConfigMap swap (the watched inode is not touched),
// and polling a small file every few seconds costs nothing.
package filewatch

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// MaxSize bounds how much of the file is read (and hashed) per poll.
const MaxSize = 1 << 20

// Watcher polls one file; create it with Start, end it with Stop.
type Watcher struct {
	path     string
	interval time.Duration
	changed  func(target string)
	last     [sha256.Size]byte
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// Start reads path once (an error here is returned: there is nothing to
// compare with) and then polls it every interval in its own goroutine.
// changed is called from that goroutine, one call at a time, with the
// file's resolved target (after every symlink) whenever the content
// differs from the previous successful read. A failed read (the file is
// missing for a moment during a swap) keeps the previous content and is
// retried at the next tick.
func Start(path string, interval time.Duration, changed func(target string)) (*Watcher, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("watch %s: interval %v must be positive", path, interval)
	}
	sum, _, err := digest(path)
	if err != nil {
		return nil, err
	}
	w := &Watcher{path: path, interval: interval, changed: changed, last: sum, stop: make(chan struct{})}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

// Stop ends the polling and waits for a running changed call to return.
// It may be called more than once.
func (w *Watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

func (w *Watcher) loop() {
	defer w.wg.Done()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.poll()
	}
}

// poll reads the file once and calls changed when its content is new; a
// failed read changes nothing.
func (w *Watcher) poll() {
	sum, target, err := digest(w.path)
	if err != nil || sum == w.last {
		return
	}
	w.last = sum
	w.changed(target)
}

// digest returns the SHA-256 of the file's content (at most MaxSize bytes
// plus one, so a file growing past the cap still reads as a change) and
// its resolved path.
func digest(path string) ([sha256.Size]byte, string, error) {
	var sum [sha256.Size]byte
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return sum, "", fmt.Errorf("watch %s: %w", path, err)
	}
	f, err := os.Open(target)
	if err != nil {
		return sum, "", fmt.Errorf("watch %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, MaxSize+1)); err != nil && !errors.Is(err, io.EOF) {
		return sum, "", fmt.Errorf("watch %s: read: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, target, nil
}
