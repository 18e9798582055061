package iperfrun

import "testing"

func TestMedianRatio(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{5, 1, 9}, 5}} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	in := []float64{2, 1}
	Median(in)
	if in[0] != 2 {
		t.Error("Median sorted its input in place")
	}
	if Ratio(3, 0) != 0 || Ratio(3, 2) != 1.5 {
		t.Errorf("Ratio(3,0)=%v Ratio(3,2)=%v", Ratio(3, 0), Ratio(3, 2))
	}
}
