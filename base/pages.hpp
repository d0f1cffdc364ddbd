// base/pages: memory of its own pages, straight from the kernel (an anonymous
// mmap), for the big buffers a connection holds for its whole life.
//
// Why not malloc: glibc serves a freed block of a few hundred KiB again from
// the arena it came from and gives an arena's pages back only from its top,
// so after a burst of streams has closed most of their buffers stay resident
// (README "Memory": 133 MiB kept after 1,000 streams, 22 MiB idle). Pages of
// their own go back to the system the moment their owner is destroyed, whatever
// else the heap holds. Like malloc'd memory that is not zero-filled, a page
// becomes resident only when first written, so an idle buffer costs nothing.
//
// For a few allocations of many pages each (one mmap and one munmap each),
// never for small or frequent ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace xmig {

// `bytes` (more than 0) rounded up to whole pages, zero until written;
// throws std::bad_alloc when the kernel refuses.
void* map_pages(size_t bytes);
// Gives back what map_pages(bytes) returned; nothing for nullptr.
void unmap_pages(void* pages, size_t bytes) noexcept;

// A fixed-size byte buffer in pages of its own.
class PageBuffer {
 public:
  explicit PageBuffer(size_t size) : bytes_(static_cast<uint8_t*>(map_pages(size))), size_(size) {}
  ~PageBuffer() { unmap_pages(bytes_, size_); }
  PageBuffer(PageBuffer&& o) noexcept
      : bytes_(std::exchange(o.bytes_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PageBuffer& operator=(PageBuffer&& o) noexcept {
    std::swap(bytes_, o.bytes_);
    std::swap(size_, o.size_);
    return *this;
  }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  uint8_t* data() { return bytes_; }
  size_t size() const { return size_; }

 private:
  uint8_t* bytes_;
  size_t size_;
};

// For a growable queue in pages of its own:
// std::vector<uint8_t, PageAllocator<uint8_t>>. Every instance is equal, so
// two such vectors swap in O(1).
template <class T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(map_pages(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { unmap_pages(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const PageAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace xmig
