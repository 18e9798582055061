package iperfrun

import "slices"

// Median returns the median of v (the mean of the two middle values for an
// even count), or 0 for none. v is not modified.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Ratio returns a/b, or 0 when b is 0 (nothing to compare against).
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
