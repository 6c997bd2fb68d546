// kw_steal_key DATA_DIR [TENANT]: plays the 2023 thief for tests. With the data directory's
// master key and key database in hand, it unseals the newest live signing key of the consumer
// issuer (or of TENANT's issuer) and prints it as a private JWK with kid, alg and issuer, ready
// for `keyward token sign --key`. Built with the tests only; Keyward itself has no command that
// exports a private key.
#include <iostream>
#include <string>

#include "identity/directory.h"
#include "identity/key_ring.h"
#include "identity/key_store.h"
#include "identity/master_key.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: kw_steal_key DATA_DIR [TENANT]\n";
    return 2;
  }
  const std::string dir = argv[1];
  const std::string tenant = argc == 3 ? argv[2] : std::string(kw::identity::kConsumerTenantId);
  auto master = kw::identity::MasterKey::Load(dir + "/master.key");
  auto store = kw::identity::SqliteKeyStore::OpenFile(dir + "/keys.db");
  if (!master.ok() || !store.ok()) {
    std::cerr << "kw_steal_key: " << (master.ok() ? store.status() : master.status()).message()
              << "\n";
    return 1;
  }
  auto keys = (*store)->LoadAll();
  if (!keys.ok()) {
    std::cerr << "kw_steal_key: " << keys.status().message() << "\n";
    return 1;
  }
  const kw::identity::KeyRecord* pick = nullptr;
  for (const auto& k : *keys) {
    bool live = k.state == kw::identity::SigningKeyState::kActive ||
                k.state == kw::identity::SigningKeyState::kPublished ||
                k.state == kw::identity::SigningKeyState::kRetiring;
    if (live && k.issuer.tenant_id == tenant) pick = &k;
  }
  if (!pick) {
    std::cerr << "kw_steal_key: no live key of tenant " << tenant << " in " << dir << "\n";
    return 1;
  }
  auto priv = kw::identity::UnsealKeyRecord(*master, *pick);
  if (!priv.ok()) {
    std::cerr << "kw_steal_key: " << priv.status().message() << "\n";
    return 1;
  }
  std::string jwk = priv->ToJwk();
  jwk.pop_back();
  jwk += ",\"kid\":\"" + pick->kid + "\",\"alg\":\"" +
         std::string(kw::crypto::AlgorithmName(pick->alg)) + "\"}";
  std::cout << jwk << "\n";
  return 0;
}
