#include "base/pages.hpp"

#include <sys/mman.h>

#include <new>

namespace xmig {

void* map_pages(size_t bytes) {
  void* pages = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) throw std::bad_alloc();
  return pages;
}

void unmap_pages(void* pages, size_t bytes) noexcept {
  if (pages) ::munmap(pages, bytes);
}

}  // namespace xmig
