"""Three-letter codes valid in an MRZ issuer or nationality field (ICAO Doc 9303 part 3 §5).

ISO 3166-1 alpha-3 codes plus the codes ICAO adds (D for Germany, the British-nationality codes, UN
organisations, XX* stateless/refugee, the EU and other organisations, UTO for the ICAO specimen "Utopia").
Hand-kept because no maintained PyPI package ships ICAO's extensions; the check is a guard against OCR
confusions, not a political statement.
"""

from __future__ import annotations

_ISO_3166_ALPHA3 = """
ABW AFG AGO AIA ALA ALB AND ARE ARG ARM ASM ATA ATF ATG AUS AUT AZE BDI BEL BEN BES BFA BGD BGR BHR BHS
BIH BLM BLR BLZ BMU BOL BRA BRB BRN BTN BVT BWA CAF CAN CCK CHE CHL CHN CIV CMR COD COG COK COL COM CPV
CRI CUB CUW CXR CYM CYP CZE DEU DJI DMA DNK DOM DZA ECU EGY ERI ESH ESP EST ETH FIN FJI FLK FRA FRO FSM
GAB GBR GEO GGY GHA GIB GIN GLP GMB GNB GNQ GRC GRD GRL GTM GUF GUM GUY HKG HMD HND HRV HTI HUN IDN IMN
IND IOT IRL IRN IRQ ISL ISR ITA JAM JEY JOR JPN KAZ KEN KGZ KHM KIR KNA KOR KWT LAO LBN LBR LBY LCA LIE
LKA LSO LTU LUX LVA MAC MAF MAR MCO MDA MDG MDV MEX MHL MKD MLI MLT MMR MNE MNG MNP MOZ MRT MSR MTQ MUS
MWI MYS MYT NAM NCL NER NFK NGA NIC NIU NLD NOR NPL NRU NZL OMN PAK PAN PCN PER PHL PLW PNG POL PRI PRK
PRT PRY PSE PYF QAT REU ROU RUS RWA SAU SDN SEN SGP SGS SHN SJM SLB SLE SLV SMR SOM SPM SRB SSD STP SUR
SVK SVN SWE SWZ SXM SYC SYR TCA TCD TGO THA TJK TKL TKM TLS TON TTO TUN TUR TUV TWN TZA UGA UKR UMI URY
USA UZB VAT VCT VEN VGB VIR VNM VUT WLF WSM YEM ZAF ZMB ZWE
"""

# ICAO Doc 9303 part 3 §5 additions: Germany's one-letter code, British nationality categories, UN and
# other organisations, refugees/stateless (XX*), Kosovo (RKS, UNK), the EU, and the Utopia specimen.
_ICAO_EXTRA = """
D GBD GBN GBO GBP GBS UNO UNA UNK XBA XIM XCC XCE XCO XEC XES XMP XOM XPO XDC XXA XXB XXC XXX EUE RKS UTO
"""

ICAO_CODES: frozenset[str] = frozenset((_ISO_3166_ALPHA3 + _ICAO_EXTRA).split())


def is_known_code(code_without_fillers: str) -> bool:
    return code_without_fillers in ICAO_CODES
