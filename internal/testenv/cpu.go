package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100
// on every Linux platform Go supports).
const clockTick = 10 * time.Millisecond

// CPUTime is the CPU time (user and system) the server's processes have
// used so far: those alive in its process group, and those that ended
// (reaped by the server, which adds them up). On a machine shared with
// other work, the CPU a benchmark made the server spend is steadier than
// its wall time. It is 0 where /proc cannot tell (not Linux).
func (s *Server) CPUTime() time.Duration {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	leader := s.cmd.Process.Pid
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range procs {
		f, ok := procStat(p)
		if !ok || f.pgrp != leader {
			continue
		}
		ticks += f.utime + f.stime
		if f.pid == leader {
			ticks += f.cutime + f.cstime
		}
	}
	return time.Duration(ticks) * clockTick
}

type procFields struct {
	pid, pgrp                    int
	utime, stime, cutime, cstime int64
}

// procStat reads the fields of /proc/PID/stat that CPUTime needs.
func procStat(path string) (procFields, bool) {
	var f procFields
	b, err := os.ReadFile(path)
	if err != nil {
		return f, false
	}
	s := string(b)
	// The command, in parentheses, may hold spaces: fields follow its
	// last ')'.
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return f, false
	}
	if f.pid, err = strconv.Atoi(strings.TrimSpace(s[:strings.IndexByte(s, '(')])); err != nil {
		return f, false
	}
	rest := strings.Fields(s[end+1:])
	// rest[0] is field 3 (state): pgrp is field 5, utime..cstime 14..17.
	if len(rest) < 15 {
		return f, false
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(rest[i-3], 10, 64); return n }
	f.pgrp = int(num(5))
	f.utime, f.stime, f.cutime, f.cstime = num(14), num(15), num(16), num(17)
	return f, true
}
