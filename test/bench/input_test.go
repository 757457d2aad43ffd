package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// users is the number of users the events are spread over.
const users = 100_000

// perMinute is the number of events in a minute of event time: every user
// has ten events in each tumbling minute.
const perMinute = 1_000_000

// base is the event time of the first event, a minute's start.
var base = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()

// input writes the events file once per process: rows JSON lines
// {"ts":MS,"user_id":N,"amount":D.DD}, in event-time order, a million a
// minute, the users in a fixed shuffled order (7919 is prime to 100k, so
// each run of 100k events has every user once). About 53 bytes a line.
var input = sync.OnceValues(func() (string, error) {
	path := filepath.Join(tmp, "orders.jsonl")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var line []byte
	for i := range rows {
		line = append(line[:0], `{"ts":`...)
		line = strconv.AppendInt(line, base+int64(i)*60_000/perMinute, 10)
		line = append(line, `,"user_id":`...)
		line = strconv.AppendInt(line, int64(i*7919%users), 10)
		line = append(line, `,"amount":`...)
		line = strconv.AppendInt(line, int64(i%1000), 10)
		c := i % 100
		line = append(line, '.', byte('0'+c/10), byte('0'+c%10), '}', '\n')
		if _, err := w.Write(line); err != nil {
			f.Close()
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
})

// windows is the number of window rows the input yields: one per user per
// minute of event time.
func windows() int { return users * ((rows + perMinute - 1) / perMinute) }
