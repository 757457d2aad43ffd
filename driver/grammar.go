package driver

import (
	"fmt"
	"github.com/kisflow-go/kisflow/config"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes. In YAML: 512, 64KiB, 10MiB, 1GiB (powers of
// 1024) or 64KB, 10MB, 1GB (powers of 1000).
type Size int64

// String writes the size in the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

var sizeUnits = []struct {
	suffix string
	n      int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

// ParseSize reads a size: a whole number of bytes, with an optional unit
// (B, KiB, MiB, GiB, KB, MB, GB).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (want bytes, such as 512, 64KiB or 10MiB)", s)
	}
	return Size(n * mult), nil
}

// ParseDuration reads a duration: a Go duration with its unit (500ms, 2s,
// 1h30m), or 0. A bare number is refused, naming the units it could mean.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(t, 64); err == nil && n != 0 {
		return 0, fmt.Errorf("%q has no unit (want a duration such as %ss or %sms)", s, t, t)
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (want one such as 500ms, 2s or 1h30m)", s)
	}
	return d, nil
}

// ParseBool reads true or false (nothing else: yes, 1 and on are refused,
// so that a typo is not read as false).
func ParseBool(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (want true or false)", s)
}

// parse reads raw by kind.
func parse(kind Kind, raw string, enum []string) (any, error) {
	switch kind {
	case KindDuration:
		return ParseDuration(raw)
	case KindSize:
		return ParseSize(raw)
	case KindBool:
		return ParseBool(raw)
	case KindInt:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", raw)
		}
		return n, nil
	case KindNumber:
		n, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", raw)
		}
		return n, nil
	case KindList:
		var out []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, nil
	case KindEnum:
		v := strings.TrimSpace(raw)
		if !slices.Contains(enum, v) {
			return nil, fmt.Errorf("%q is not one of %s%s", raw, strings.Join(enum, ", "), config.SuggestName(v, enum))
		}
		return v, nil
	}
	return raw, nil
}
