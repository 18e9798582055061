//go:build !linux

package udpbatch

import "fmt"

func (s *sysConn) enableGSO() error {
	return fmt.Errorf("enable UDP segmentation offload: %w", ErrUnsupported)
}

func (s *sysConn) enableGRO() error {
	return fmt.Errorf("enable UDP receive offload: %w", ErrUnsupported)
}
