# pragma version ~=0.4.3
"""
@title USD Coin (derivnet)
@notice Devnet collateral token: a plain ERC-20 with 6 decimals and a
        public faucet. Amounts are USDC base units (1e-6 USDC).
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

implements: IERC20
implements: IERC20Detailed

# the most one faucet call mints: 10,000,000 USDC
FAUCET_CAP: public(constant(uint256)) = 10_000_000 * 10**6

name: public(constant(String[32])) = "USD Coin (derivnet)"
symbol: public(constant(String[32])) = "USDC"
decimals: public(constant(uint8)) = 6

totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "usdc: transfer to zero address"
    balance: uint256 = self.balanceOf[sender]
    assert balance >= amount, "usdc: insufficient balance"
    self.balanceOf[sender] = balance - amount
    self.balanceOf[receiver] += amount
    log IERC20.Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    if allowed != max_value(uint256):
        assert allowed >= amount, "usdc: insufficient allowance"
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log IERC20.Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def faucet(amount: uint256):
    """
    @notice Mint `amount` base units to the caller (devnet only).
    """
    assert amount <= FAUCET_CAP, "usdc: faucet cap"
    self.totalSupply += amount
    self.balanceOf[msg.sender] += amount
    log IERC20.Transfer(sender=empty(address), receiver=msg.sender, value=amount)
