// Lookups and peeks: attributes from listings, one HEAD per missing name and
// window, and what peek answers without asking upstream.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, AttributesComeFromTheListingWithoutHeads) {
  server_.put("pxelinux.cfg/default", "DEFAULT linux\n");
  auto a = lookup("pxelinux.cfg/default");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_FALSE(a->is_dir);
  EXPECT_EQ(a->size, 14u);
  auto d = lookup("pxelinux.cfg");
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->is_dir);
  // The pxelinux probe ladder: names absent from a fresh listing cost nothing.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 20; ++i) {
      auto m = lookup("pxelinux.cfg/0A00000" + std::to_string(i));
      ASSERT_FALSE(m);
      EXPECT_EQ(m.error().code, ENOENT);
    }
  }
  for (const auto& r : server_.requests()) EXPECT_NE(r.method, "HEAD") << r.path;
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/"), 1u);
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/default"), 0u) << "a lookup never fetches a body";
}

TEST_F(FetcherTest, WithoutAListingAMissingNameCostsOneHeadPerWindow) {
  // The test upstream answers 404 for a listing of a directory that does not exist.
  for (int i = 0; i < 10; ++i) {
    auto m = lookup("nodir/x");
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ENOENT);
  }
  EXPECT_EQ(server_.count("GET", "nodir/"), 1u);
  EXPECT_EQ(server_.count("HEAD", "nodir/x"), 1u);
}

TEST_F(FetcherTest, PeekAnswersFromTheListingAndNeverAsksForOne) {
  server_.put("boot/vmlinuz", "kernel");
  server_.put("boot/efi/grubx64.efi", "grub");
  auto before = fetcher_->peek("boot/vmlinuz");
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().code, EWOULDBLOCK);
  EXPECT_TRUE(server_.requests().empty()) << "peek sent " << server_.requests()[0].path;

  ASSERT_TRUE(list_dir("boot"));
  auto f = fetcher_->peek("boot/vmlinuz");
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_FALSE(f->is_dir);
  EXPECT_EQ(f->size, 6u);
  auto d = fetcher_->peek("boot/efi");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_TRUE(d->is_dir);
  auto gone = fetcher_->peek("boot/initrd");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  // What a lookup answers next: the same version, no request of its own.
  auto a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->version, f->version);
  ASSERT_EQ(server_.requests().size(), 1u);
  EXPECT_EQ(server_.count("GET", "boot/"), 1u);
}

TEST_F(FetcherTest, PeekSendsNoHeadWhereTheListingHasNoSize) {
  server_.no_listing("plain/");
  server_.put("plain/kernel", "12345678");
  ASSERT_TRUE(lookup("plain"));     // known as a directory from the root listing
  EXPECT_FALSE(list_dir("plain"));  // no listing, nothing cached below it
  for (int i = 0; i < 3; ++i) {
    auto p = fetcher_->peek("plain/kernel");
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, EWOULDBLOCK);
  }
  EXPECT_EQ(server_.count("HEAD", "plain/kernel"), 0u);
  auto a = lookup("plain/kernel");  // the one HEAD
  ASSERT_TRUE(a) << a.error().message;
  auto p = fetcher_->peek("plain/kernel");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->size, 8u);
  EXPECT_EQ(p->version, a->version);
  EXPECT_EQ(server_.count("HEAD", "plain/kernel"), 1u);
}

}  // namespace
}  // namespace netbootfs::cache
